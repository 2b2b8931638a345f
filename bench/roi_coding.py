"""ROI coding: keep the salient cells at JPEG quality, flatten or blur the rest, one plain JPEG per image.

    python bench/roi_coding.py --classifier-ckpt logs/reference/10cls/checkpoints/best.ckpt \\
        --encoder ENCODER.pt [--encoder ...] [--out results/roi_10cls]

On the official-val images of the first ``--num-classes`` classes of tiny-imagenet-100, every
:class:`taskcodec.baselines.roi.ROIJPEG` setting of the sweep below plus the uncompressed reference and
plain JPEG go through ``evaluate_baseline`` (real files, real decoder, reference classifier), into
the usual rate-accuracy table with paired differences (``rate_accuracy.csv/.json``, plot).

``costs.json`` gives what each saliency source costs the encoder (ms/image of ``saliency`` +
mask, on ``--threads`` torch threads, 1 by default), against plain JPEG encode (Pillow save, same options)
measured in the same run, and how much of each source's mask falls inside the object box
(share of mask pixels in the box / box area share; 1 = no better than chance).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datamodules.tiny_imagenet import TinyImageNetDataModule  # noqa: E402
from taskcodec.analysis.bits import box_share, box_share_stats  # noqa: E402
from taskcodec.baselines import make_codec  # noqa: E402
from taskcodec.evaluation import add_paired, evaluate_baseline, plot_rate_accuracy, write_table  # noqa: E402
from taskcodec.models import load_image_classifier  # noqa: E402
from taskcodec.provenance import bench_parser, start_bench, write_json, write_provenance  # noqa: E402


def sources(args: argparse.Namespace) -> list[dict]:
    out = [{"source": "gradient", "checkpoint": args.classifier_ckpt}, {"source": "variance"}, {"source": "center"}]
    return out + [{"source": "bitmap", "checkpoint": e} for e in args.encoder]


def sweep(args: argparse.Namespace) -> list[dict]:
    settings = []
    for src in sources(args):
        for p in args.fractions:
            for bg in ("flat", "blur"):
                settings.append({**src, "fraction": p, "quality": args.quality, "background": bg})
        settings.append({**src, "fraction": 0.5, "quality": args.quality_hi, "background": "flat"})
    return settings


def per_ms(fn, items) -> float:
    t = time.perf_counter()
    for it in items:
        fn(it)
    return 1e3 * (time.perf_counter() - t) / len(items)


def costs(args: argparse.Namespace, images: np.ndarray, boxes: np.ndarray) -> dict:
    """ms/image of each source's mask vs plain JPEG encode, and how much of each mask is in the box."""
    sample = images[: args.timing_images]

    def jpeg_save(im: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=args.quality, optimize=True, subsampling="4:2:0")
        return buf.getvalue()

    jpeg_save(sample[0])  # warm-up
    jpeg_ms = per_ms(jpeg_save, sample)
    area = [box_share(np.ones(images.shape[1:3]), b)[1] for b in boxes]
    out = {"jpeg_encode_ms_per_image": jpeg_ms, "jpeg_quality": args.quality, "timing_images": len(sample),
           "torch_threads": torch.get_num_threads(), "sources": {}}  # fmt: skip
    for src in sources(args):
        codec = make_codec("roi_jpeg", {**src, "fraction": 0.25})
        codec.mask(sample[0])  # warm-up (loads the model once)
        ms = per_ms(codec.mask, sample)
        entry = {"setting": codec.setting, "mask_ms_per_image": ms, "ratio_to_jpeg_encode": ms / jpeg_ms,
                 "needs": {"gradient": "the classifier + a backward pass on the client", "bitmap": "the learned encoder on the client"}.get(src["source"], "no model")}  # fmt: skip
        for p in args.fractions:
            c = make_codec("roi_jpeg", {**src, "fraction": p})
            shares = [box_share(c.mask(im).astype(float), b)[0] for im, b in zip(images, boxes, strict=True)]
            entry[f"mask_in_box_p={p:g}"] = box_share_stats(shares, area)
        out["sources"][codec.setting.split(",")[0]] = entry
        print(f"{codec.setting.split(',')[0]}: {ms:.2f} ms/image ({ms / jpeg_ms:.1f}x JPEG encode {jpeg_ms:.2f} ms); "
              f"mask-in-box ratio p=0.25 {entry['mask_in_box_p=0.25']['ratio_of_means']:.3f}", flush=True)  # fmt: skip
    return out


def main() -> None:
    ap = bench_parser(__doc__, out="results/roi_10cls")
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--classifier-ckpt", required=True)
    ap.add_argument("--encoder", action="append", default=[], help="encoder-<id>.pt for the bitmap source (repeatable)")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    ap.add_argument("--quality", type=int, default=30)
    ap.add_argument("--quality-hi", type=int, default=50)
    ap.add_argument("--jpeg-qualities", type=int, nargs="+", default=[5, 10, 20, 30, 50])
    ap.add_argument("--timing-images", type=int, default=200)
    ap.add_argument("--limit", type=int, default=None, help="first N images only (quick checks)")
    args = ap.parse_args()
    start_bench(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    dm = TinyImageNetDataModule(root=args.data, num_classes=args.num_classes, return_boxes=False)
    dm.setup("test")
    n = args.limit or len(dm.test_set.images)
    images, labels, boxes = dm.test_set.images[:n], dm.test_set.labels[:n], dm.test_set.boxes[:n]
    classifier = load_image_classifier(args.classifier_ckpt)

    cost = costs(args, images, boxes)
    write_json(out / "costs.json", cost)
    rows = [evaluate_baseline(make_codec("none", None), classifier, images, labels)]
    for q in args.jpeg_qualities:
        rows.append(evaluate_baseline(make_codec("jpeg", q), classifier, images, labels))
    for setting in sweep(args):
        t = time.perf_counter()
        rows.append(evaluate_baseline(make_codec("roi_jpeg", setting), classifier, images, labels))
        rows[-1]["seconds"] = time.perf_counter() - t
    add_paired(rows)
    for r in rows:
        print(f"{r['codec']:9s} {r['setting']:55s} {r['bytes_per_image']:8.1f} B  top1 {r['top1']:.3f}  "
              f"diff {r['diff_vs_ref']:+.3f} [{r['diff_ci95_lo']:+.3f}, {r['diff_ci95_hi']:+.3f}]", flush=True)  # fmt: skip
    write_table(rows, out, "rate_accuracy")
    plot_rows = [
        {**r, "codec": f"roi[{r['setting'].split(',')[0][4:].split(':')[0]},{r['setting'].split('bg=')[1]}]"}
        if r["codec"] == "roi_jpeg" and f"q={args.quality}," in r["setting"] else r
        for r in rows if r["codec"] != "roi_jpeg" or f"q={args.quality}," in r["setting"]
    ]  # fmt: skip
    plot_rate_accuracy(plot_rows, out / "rate_accuracy.png", f"ROI JPEG (q={args.quality} inside), {n} val images")
    write_provenance(out / "provenance.json", torch_threads=torch.get_num_threads(), data=args.data,
                     num_classes=args.num_classes, n_images=n)  # fmt: skip
    print(f"wrote {out}/rate_accuracy.csv/.json/.png, costs.json, provenance.json")


if __name__ == "__main__":
    main()
