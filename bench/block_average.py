"""Does a per-block variance side channel earn its bytes? Block averages with and without it.

    python bench/block_average.py --classifier-ckpt logs/reference/10cls/checkpoints/best.ckpt \
        --out results/block_average_10cls

Rows (same reference classifier and the same 500 test images as results/split_10cls, so the tables
join): the uncompressed reference; ``block_average`` at k = 2, 3, 4 with the small image coded as
PNG, lossless WebP, lossy WebP and JPEG, each with no side channel (``levels=0``) and with a 4-level
luma-std side channel (k = 2 also 2 and 8 levels); the plain raw ``downsample`` at the same k; a few
JPEG and WebP points. Writes rate_accuracy.{csv,json,png} (``evaluate.py``'s columns; in the table
and plot each block-average series is named ``block_average[<small>,L<levels>]``), side_channel.json
(per (k, small): the side channel's bytes and the paired top-1 difference levels=4 minus levels=0 on
the same images) and provenance.json.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datamodules.tiny_imagenet import TinyImageNetDataModule  # noqa: E402
from taskcodec.baselines import make_codec  # noqa: E402
from taskcodec.curves import paired_difference  # noqa: E402
from taskcodec.evaluation import add_paired, evaluate_baseline, plot_rate_accuracy, write_table  # noqa: E402
from taskcodec.models import load_image_classifier  # noqa: E402
from taskcodec.provenance import bench_parser, start_bench, write_json, write_provenance  # noqa: E402

SMALL = [("png", None), ("webp_lossless", None), ("webp", 50), ("jpeg", 50)]


def settings() -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = [("downsample", k) for k in (2, 3, 4)]
    out += [("jpeg", q) for q in (10, 30, 75)] + [("webp", q) for q in (10, 30, 75)]
    for small, q in SMALL:
        for k in (2, 3, 4):
            for levels in (0, 4):
                out.append(("block_average", {"factor": k, "levels": levels, "small": small, "quality": q}))
    out += [("block_average", {"factor": 2, "levels": n, "small": "webp_lossless"}) for n in (2, 8)]
    return out


def main() -> None:
    p = bench_parser(
        __doc__, out="results/block_average_10cls", threads=int(os.environ.get("OMP_NUM_THREADS", "1"))
    )
    p.add_argument("--classifier-ckpt", required=True)
    p.add_argument("--num-classes", type=int, default=10)
    args = p.parse_args()
    start_bench(args)
    out = Path(args.out)
    dm = TinyImageNetDataModule(root=args.data, num_classes=args.num_classes, num_workers=0)
    dm.setup("test")
    images, labels = dm.test_set.images, np.asarray(dm.test_set.labels)
    classifier = load_image_classifier(args.classifier_ckpt)

    rows = [evaluate_baseline(make_codec("none", None), classifier, images, labels)]
    for name, setting in settings():
        if isinstance(setting, dict) and setting.get("quality") is None:
            setting = {k: v for k, v in setting.items() if k != "quality"}
        codec = make_codec(name, setting)
        row = evaluate_baseline(codec, classifier, images, labels)
        if name == "block_average":
            row["codec"] = f"block_average[{codec.small},L{codec.levels}]"
        rows.append(row)
        print(
            f"{row['codec']:>34} {row['setting']:>28}: {row['bytes_per_image']:8.1f} B  top-1 {row['top1']:.3f}"
        )
    add_paired(rows)
    out.mkdir(parents=True, exist_ok=True)
    write_table(rows, out, "rate_accuracy")
    plot_rate_accuracy(
        rows, out / "rate_accuracy.png", f"block averages ± variance side channel, n={len(labels)}"
    )

    by_setting = {r["setting"]: r for r in rows if r["codec"].startswith("block_average")}
    summary = []
    for small, q in SMALL:
        for k in (2, 3, 4):
            tail = f",{small}" + (f",q={q}" if q is not None else "")
            plain, side = by_setting[f"k={k},levels=0{tail}"], by_setting[f"k={k},levels=4{tail}"]
            d = paired_difference(side["correct"], plain["correct"])
            summary.append({
                "k": k, "small": small, "quality": q,
                "bytes_plain": plain["bytes_per_image"], "bytes_with_side": side["bytes_per_image"],
                "side_bytes": side["bytes_per_image"] - plain["bytes_per_image"],
                "top1_plain": plain["top1"], "top1_with_side": side["top1"],
                "paired_diff_side_minus_plain": d["diff"], "paired_ci95": d["bootstrap_ci95"],
            })  # fmt: skip
    write_json(out / "side_channel.json", summary)
    write_provenance(out / "provenance.json", args=vars(args))
    for s in summary:
        print(
            f"k={s['k']} {s['small']:>13}: +{s['side_bytes']:6.1f} B side, top-1 {s['top1_plain']:.3f} -> "
            f"{s['top1_with_side']:.3f}, paired {s['paired_diff_side_minus_plain']:+.3f} {s['paired_ci95']}"
        )


if __name__ == "__main__":
    main()
