"""``taskcodec`` command line. Plain PyTorch: it never imports Lightning or Hydra.

    taskcodec export CKPT [--out DIR]      encoder-<id>.pt + decoder-<id>.pt from a train.py checkpoint
    taskcodec info FILE                     what an exported file holds
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from taskcodec.errors import TaskcodecError


def _export(args: argparse.Namespace) -> None:
    from taskcodec.export import export_checkpoint

    out = Path(args.out) if args.out else Path(args.ckpt).resolve().parent.parent / "export"
    enc, dec = export_checkpoint(args.ckpt, out)
    print(f"encoder: {enc}\ndecoder: {dec}")


def _info(args: argparse.Namespace) -> None:
    from taskcodec.models import read_checkpoint

    blob = read_checkpoint(args.file)
    if not isinstance(blob, dict) or "kind" not in blob:
        raise TaskcodecError(f"{args.file} is not a taskcodec export")
    n = sum(v.numel() for v in blob["state_dict"].values())
    print(f"{blob['kind']} v{blob['version']} id={blob['codec_id']} params={n} config={blob['config']} meta={blob['meta']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taskcodec", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", help="write encoder/decoder files from a joint-codec checkpoint")
    p.add_argument("ckpt", help="Lightning checkpoint written by train.py (model=joint)")
    p.add_argument("--out", help="output folder (default: <run dir>/export)")
    p.set_defaults(func=_export)
    p = sub.add_parser("info", help="describe an exported encoder or decoder file")
    p.add_argument("file")
    p.set_defaults(func=_info)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except TaskcodecError as e:
        print(f"taskcodec: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
