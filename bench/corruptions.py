"""Common corruptions: accuracy and bytes of the reference, JPEG and the learned codecs.

For clean images and each corruption x severity (taskcodec.corruptions: ImageNet-C's functions
from the ``imagecorruptions`` package, severities 1-3) on the 500 official-val images of the
first 10 classes, every pipeline classifies the *same* corrupted images:

* ``raw``: the reference classifier on the corrupted pixels (12,288 B each);
* ``jpeg``: JPEG at its parity quality on clean images (q=30 in results/split_10cls), decoded, reference;
* each learned codec: real records (size byte + range-coded payload) -> its own server.

Rows give top-1, the paired difference from ``raw`` on the same images, the paired difference
of each learned codec from JPEG, and the byte distribution (mean, p50, p99, max).

    python bench/corruptions.py --classifier-ckpt logs/reference/10cls/checkpoints/best.ckpt \
        --codec hyperprior=logs/split_sweep/10cls/layer4_hyper_hi/0/export \
        --codec factorized=logs/split_sweep/10cls/layer4_hi/0/export --out results/corruptions_10cls
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datamodules.tiny_imagenet import TinyImageNetDataModule  # noqa: E402
from taskcodec.baselines import JPEG  # noqa: E402
from taskcodec.corruptions import CORRUPTIONS, SEVERITIES, corrupt_images  # noqa: E402
from taskcodec.curves import paired_difference  # noqa: E402
from taskcodec.evaluation import classify, code_and_classify, to_tensor  # noqa: E402
from taskcodec.export import load_decoder, load_encoder  # noqa: E402
from taskcodec.models import load_image_classifier  # noqa: E402
from taskcodec.provenance import bench_parser, start_bench, write_json, write_provenance  # noqa: E402


def byte_stats(sizes: list[int]) -> dict:
    a = np.asarray(sizes, dtype=float)
    p50, p99 = np.percentile(a, [50, 99]).tolist()
    return {"bytes_mean": float(a.mean()), "bytes_p50": p50, "bytes_p99": p99, "bytes_max": float(a.max())}


def run_codec(encoder, decoder, images: np.ndarray, batch: int = 250) -> tuple[list[int], np.ndarray]:
    sizes, preds = [], []
    for i in range(0, len(images), batch):
        out = code_and_classify(encoder, decoder, to_tensor(images[i : i + batch]))
        sizes += out["record_bytes"]
        preds.append(out["logits"].argmax(1).numpy())
    return sizes, np.concatenate(preds)


def main() -> None:
    p = bench_parser(__doc__, threads=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--classifier-ckpt", required=True)
    p.add_argument("--codec", action="append", required=True, help="NAME=EXPORT_DIR (encoder-*.pt + decoder-*.pt)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--jpeg-quality", type=int, default=30, help="JPEG's parity quality on clean images")
    p.add_argument("--severities", default=",".join(map(str, SEVERITIES)))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    start_bench(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    dm = TinyImageNetDataModule(root=args.data, num_classes=args.num_classes)
    dm.setup("test")
    clean, labels = dm.test_set.images, np.asarray(dm.test_set.labels)
    classifier = load_image_classifier(args.classifier_ckpt)
    jpeg = JPEG(args.jpeg_quality)
    codecs = {}
    for spec in args.codec:
        name, _, folder = spec.partition("=")
        enc = sorted(Path(folder).glob("encoder-*.pt"))[0]
        codecs[name] = (load_encoder(enc)[0], load_decoder(enc.with_name(enc.name.replace("encoder-", "decoder-")))[0], str(enc))

    conditions = [("clean", 0)] + [(c, int(s)) for c in CORRUPTIONS for s in args.severities.split(",")]
    rows, per_image_bytes = [], {}
    t0 = time.perf_counter()
    for corruption, severity in conditions:
        images = clean if corruption == "clean" else corrupt_images(clean, corruption, severity, args.seed)
        raw_correct = classify(classifier, images).argmax(1).numpy() == labels
        encoded = [jpeg.encode(im) for im in images]
        jpeg_correct = classify(classifier, np.stack([e.decoded for e in encoded])).argmax(1).numpy() == labels
        results = {"raw": ([images[0].size] * len(images), raw_correct),
                   f"jpeg q={args.jpeg_quality}": ([e.file_bytes for e in encoded], jpeg_correct)}  # fmt: skip
        for name, (enc, dec, _) in codecs.items():
            sizes, preds = run_codec(enc, dec, images)
            results[f"taskcodec {name}"] = (sizes, preds == labels)
        for pipeline, (sizes, correct) in results.items():
            d = paired_difference(correct.tolist(), raw_correct.tolist())
            row = {"corruption": corruption, "severity": severity, "pipeline": pipeline, "top1": float(correct.mean()),
                   "diff_vs_raw": d["diff"], "diff_vs_raw_ci95": d["bootstrap_ci95"], **byte_stats(sizes)}  # fmt: skip
            if pipeline.startswith("taskcodec"):
                dj = paired_difference(correct.tolist(), jpeg_correct.tolist())
                row |= {"diff_vs_jpeg": dj["diff"], "diff_vs_jpeg_ci95": dj["bootstrap_ci95"]}
            rows.append(row)
            per_image_bytes[f"{corruption}|{severity}|{pipeline}"] = [int(b) for b in sizes]
        print(f"{corruption:>16} s{severity}: " + "  ".join(f"{k} {v[1].mean():.3f}/{np.mean(v[0]):.0f}B" for k, v in results.items()), flush=True)
    elapsed = time.perf_counter() - t0

    write_json(out / "corruptions.json", rows)
    write_json(out / "bytes_per_image.json", per_image_bytes, indent=None)
    write_csv(rows, out / "corruptions.csv")
    plot(rows, per_image_bytes, out, args.jpeg_quality)
    write_provenance(out / "provenance.json", images=len(labels), codecs={k: v[2] for k, v in codecs.items()},
                     corruption_package="imagecorruptions 1.1.2", threads=torch.get_num_threads(),
                     seconds=elapsed)  # fmt: skip


def write_csv(rows: list[dict], path: Path) -> None:
    import csv

    cols = ["corruption", "severity", "pipeline", "top1", "diff_vs_raw", "diff_vs_jpeg", "bytes_mean", "bytes_p50", "bytes_p99", "bytes_max"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def plot(rows: list[dict], per_image: dict, out: Path, q: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pipelines = list(dict.fromkeys(r["pipeline"] for r in rows))
    clean = {r["pipeline"]: r["top1"] for r in rows if r["corruption"] == "clean"}
    fig, axes = plt.subplots(1, len(CORRUPTIONS), figsize=(3.2 * len(CORRUPTIONS), 3.2), sharey=True)
    for ax, c in zip(axes, CORRUPTIONS, strict=True):
        for pl_ in pipelines:
            pts = sorted((r["severity"], r["top1"]) for r in rows if r["corruption"] == c and r["pipeline"] == pl_)
            ax.plot([0] + [s for s, _ in pts], [clean[pl_]] + [t for _, t in pts], marker="o", label=pl_)
        ax.set_title(c, fontsize=9)
        ax.set_xlabel("severity")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "corruptions.png", dpi=110)
    plt.close(fig)

    coded = [p for p in pipelines if p != "raw"]
    conds = list(dict.fromkeys(k.rsplit("|", 1)[0] for k in per_image))
    fig, axes = plt.subplots(1, len(coded), figsize=(5 * len(coded), 4.2))
    for ax, pl_ in zip(np.atleast_1d(axes), coded, strict=True):
        data = [per_image[f"{c}|{pl_}"] for c in conds]
        ax.boxplot(data, whis=(1, 99), showmeans=True, flierprops={"markersize": 2})
        ax.set_xticks(range(1, len(conds) + 1), [c.replace("|0", "").replace("|", " s") for c in conds], rotation=90, fontsize=7)
        ax.set_title(f"{pl_}: bytes per image (whiskers p1-p99, triangle = mean)", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out / "bytes_distribution.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
