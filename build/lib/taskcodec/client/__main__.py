"""``python -m taskcodec.client compress IMAGES... -m client-<id>.onnx -o OUT.tca``: the torch-free client's command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from taskcodec.errors import TaskcodecError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taskcodec.client", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compress", help="images -> one container file (as `taskcodec compress --archive`)")
    p.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("-m", "--model", required=True, help="client-<id>.onnx from `taskcodec export --onnx`")
    p.add_argument("-o", "--out", required=True, help="the container file to write")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--native-size", action="store_true", help="code images at their own size")
    args = parser.parse_args(argv)
    try:
        from taskcodec.client.runtime import load_onnx_client
        from taskcodec.io import find_images

        items = find_images(args.inputs)
        client = load_onnx_client(args.model, args.threads, args.native_size)
        data = client.compress([path for path, _ in items], names=[name for _, name in items])
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, out)
        print(f"{len(items)} images -> {out}: {len(data)} bytes, model {client.codec_id}")
    except TaskcodecError as e:
        print(f"taskcodec: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
