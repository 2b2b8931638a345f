"""A deployed client on classes it never saw: its adapted server against the same recipe trained on them.

The check of "one client for many tasks" on one class range (issue 19): client A was trained on other
classes and is frozen; `taskcodec adapt` trained a new server for the new classes on A's decoded
latents alone. Its counterpart is the same recipe (`python train.py` with the same overrides) trained
on the new classes from scratch. Both are coded for real (compress -> records -> decode -> classify) on
the new classes' official-val images, and compared image by image (paired difference with its
intervals). The target is the issue's: the frozen client within 3 pt of the trained one, at no more
than 1.5x its bytes. Several adapted servers of the frozen client (e.g. with and without a teacher)
are each compared with the trained one. Writes unseen.json and unseen.md in --out.

    python bench/unseen_classes.py --trained logs/unseen/trained_90/export --adapted logs/unseen/adapted_90 \\
        --first-class 90 --num-classes 10 --out results/unseen_10cls
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datamodules.tiny_imagenet import TinyImageNetDataModule  # noqa: E402
from taskcodec.curves import paired_difference  # noqa: E402
from taskcodec.errors import ConfigError  # noqa: E402
from taskcodec.provenance import bench_parser, run_provenance, start_bench, write_json  # noqa: E402

MARGIN = 0.03  # "within 3 pt"
BYTES_RATIO = 1.5  # "at no more than 1.5x its bytes"


def evaluate_dir(path: Path, images: np.ndarray, labels: np.ndarray) -> dict:
    """The one (encoder, decoder) pair in an export or run folder, coded for real on the images."""
    from evaluate import codec_exports, load_pair  # the same loading and labelling as evaluate.py
    from taskcodec.evaluation import evaluate_taskcodec

    pairs = codec_exports([str(path)])
    if len(pairs) != 1:
        raise ConfigError(f"{path} holds {len(pairs)} encoder/decoder pairs; give the folder of exactly one")
    encoder, decoder, meta = load_pair(*pairs[0])
    row = evaluate_taskcodec(encoder.eval(), decoder.eval(), images, labels, meta=meta)
    row["export"] = str(pairs[0][0])
    return row


def compare(trained: dict, adapted: dict, margin: float = MARGIN, bytes_ratio: float = BYTES_RATIO) -> dict:
    """The frozen client's adapted server against the trained client, on the same images."""
    diff = paired_difference(adapted["correct"], trained["correct"])
    ratio = adapted["bytes_per_image"] / trained["bytes_per_image"]
    within_margin, within_bytes = diff["diff"] >= -margin, ratio <= bytes_ratio
    return {
        "diff_vs_trained": diff,
        "bytes_ratio": ratio,
        "within_margin": within_margin,
        "within_bytes": within_bytes,
        "target": f"frozen client within {margin * 100:g} pt of the trained one at <= {bytes_ratio:g}x its bytes",
        "target_met": within_margin and within_bytes,
    }


def server_of(adapt: dict | None) -> str:
    """How a frozen client's server was trained, from its adapt.json."""
    if not adapt:
        return "`taskcodec adapt`"
    if adapt.get("server") == "linear":
        return "`taskcodec adapt --server linear` (a linear probe)"
    if adapt.get("teacher"):
        return f"`taskcodec adapt --teacher` (KD {adapt['distill']:g})"
    return "`taskcodec adapt` (CE)"


def markdown(result: dict) -> str:
    lines = [
        f"`{result['command']}` at {result['git_revision']}",
        "",
        f"Classes {result['first_class']}-{result['first_class'] + result['num_classes'] - 1}, "
        f"{result['test_images']} official-val images; every byte of every record counted.",
        "",
        "| client | server | bytes/img (est.) | top-1 | frozen minus trained (95% CI) | bytes vs trained | target |",
        "|---|---|---|---|---|---|---|",
    ]
    t = result["trained"]
    lines.append(f"| trained on these classes | trained with it | {t['bytes_per_image']:.1f} ({t['est_bytes_per_image']:.1f}) | {t['top1']:.3f} | | | |")
    for a in result["adapted"]:
        c = a["comparison"]
        d = c["diff_vs_trained"]
        lo, hi = d["bootstrap_ci95"]
        lines.append(
            f"| frozen, from other classes | {server_of(a['adapt'])} | {a['bytes_per_image']:.1f} ({a['est_bytes_per_image']:.1f}) | "
            f"{a['top1']:.3f} | {d['diff'] * 100:+.1f} ({lo * 100:+.1f} to {hi * 100:+.1f}) | {c['bytes_ratio']:.2f}x | "
            f"{'met' if c['target_met'] else 'missed'} |"
        )
    lines += ["", f"Target: {MARGIN * 100:g} pt / {BYTES_RATIO:g}x, i.e. {result['adapted'][0]['comparison']['target']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = bench_parser(__doc__, out="results/unseen_10cls", threads=2)
    p.add_argument("--trained", type=Path, required=True, help="export (or run) folder of the recipe trained on the new classes")
    p.add_argument("--adapted", type=Path, nargs="+", required=True,
                   help="output folder(s) of `taskcodec adapt` for the frozen client, each compared with --trained")
    p.add_argument("--first-class", type=int, default=90)
    p.add_argument("--num-classes", type=int, default=10)
    args = p.parse_args()
    start_bench(args)
    t0 = time.perf_counter()
    dm = TinyImageNetDataModule(root=args.data, num_classes=args.num_classes, first_class=args.first_class, num_workers=0)
    dm.setup("test")
    images, labels = dm.test_set.images, np.asarray(dm.test_set.labels)
    with torch.inference_mode():
        trained = evaluate_dir(args.trained, images, labels)
        adapted = [evaluate_dir(folder, images, labels) for folder in args.adapted]
    rows = []
    for folder, row in zip(args.adapted, adapted, strict=True):
        adapt_json = folder / "adapt.json"
        rows.append({k: v for k, v in row.items() if k != "correct"} | {
            "adapt": json.loads(adapt_json.read_text()) if adapt_json.is_file() else None,
            "comparison": compare(trained, row),
        })  # fmt: skip
    result = {
        "first_class": args.first_class, "num_classes": args.num_classes, "test_images": len(labels),
        "trained": {k: v for k, v in trained.items() if k != "correct"},
        "adapted": rows,
        "per_image": {"trained": trained["correct"], "adapted": [row["correct"] for row in adapted]},
        "seconds": time.perf_counter() - t0,
        **run_provenance(),
    }  # fmt: skip
    out = Path(args.out)
    write_json(out / "unseen.json", result)  # creates the folder
    summary = markdown(result)
    (out / "unseen.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
