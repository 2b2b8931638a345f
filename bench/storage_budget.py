"""The storage question: at a fixed storage budget, train on more images at low quality or fewer at high?

    OMP_NUM_THREADS=1 python bench/storage_budget.py [--data ZIP --budget-quality 10 --settings q=10 q=30 q=90 png --steps 108]

The budget is what the whole training split (first 10 classes, 4,500 images after the hold-out)
takes as JPEG files at ``--budget-quality`` (real bytes, Pillow's libjpeg). Each point stores its
training images at one setting -- JPEG at a quality, or lossless PNG -- and keeps the first k
images of every class (file order, the hold-out excluded), with k the largest that fits the budget.
Each point trains the reference recipe (timm resnet18 from scratch, SGD lr 0.1 + warm-up/cosine,
label smoothing 0.1, batch 128, crop + flip) on its decoded images for the *same number of
optimiser steps* (``--steps``; 108 = 3 epochs of the full 4,500), because 15 epochs per point do
not fit this machine; fewer images therefore means more passes over each. Every point is tested
on the 500 official val images, raw and coded at its own setting, with paired differences
against the all-images point.

Writes result.json, storage_budget.png and provenance.json to ``--out``.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightning_modules.classifier import ClassifierModule  # noqa: E402
from taskcodec.baselines import make_codec  # noqa: E402
from taskcodec.curves import paired_difference  # noqa: E402
from taskcodec.evaluation import evaluate_baseline  # noqa: E402
from taskcodec.provenance import bench_parser, start_bench, write_json, write_provenance  # noqa: E402


def png_bytes(image: np.ndarray) -> int:
    """Bytes of a lossless PNG of ``image`` (Pillow, default compression level)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.tell()


def coded_train_set(train_set, setting: str):
    """(decoded images as a dataset, bytes of each stored file) for ``png`` or ``q=<quality>``."""
    if setting == "png":
        return train_set, np.array([png_bytes(im) for im in train_set.images])
    codec, sizes = make_codec("jpeg", int(setting[2:])), []

    def round_trip(image: np.ndarray) -> np.ndarray:
        encoded = codec.encode(image)
        sizes.append(encoded.file_bytes)
        return encoded.decoded

    decoded = train_set.map_images(round_trip)
    return decoded, np.array(sizes)


def first_k_per_class(labels: np.ndarray, file_bytes: np.ndarray, budget: float) -> tuple[int, np.ndarray]:
    """Largest k whose first k images of every class fit in ``budget`` bytes, and their indices."""
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    best = (0, np.empty(0, np.int64))
    for k in range(1, min(len(m) for m in members) + 1):
        idx = np.sort(np.concatenate([m[:k] for m in members]))
        if file_bytes[idx].sum() > budget:
            break
        best = (k, idx)
    return best


def train_from_scratch(
    train_set, num_classes: int, steps: int, warmup_steps: int, batch_size: int, seed: int
):
    """The reference recipe for exactly ``steps`` optimiser steps, whatever the set's size."""
    pl.seed_everything(seed, workers=True)
    per_epoch = math.ceil(len(train_set) / batch_size)
    epochs = math.ceil(steps / per_epoch)
    # ClassifierModule warms up for warmup_epochs * (steps / max_epochs) steps
    module = ClassifierModule(num_classes=num_classes, warmup_epochs=warmup_steps / (steps / epochs))
    trainer = pl.Trainer(
        max_steps=steps, max_epochs=epochs, accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
        deterministic=True, enable_progress_bar=False, limit_val_batches=0, num_sanity_val_steps=0,
        default_root_dir="/tmp",
    )  # fmt: skip
    trainer.fit(module, DataLoader(train_set, batch_size, shuffle=True))
    return module.classifier.eval(), trainer.global_step


def title(result: dict, num_classes: int) -> str:
    """The plot's title, from result.json's fields."""
    return (
        f"{num_classes} classes, {result['budget_bytes'] / 1e6:.2f} MB of training files each, "
        f"{result['recipe']['steps']} steps each; test n={result['test_images']}"
    )


def plot(points: list[dict], path: Path, title: str) -> Path:
    """Test top-1 (raw and own-setting) against training images kept, one marker per storage setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    xs = [p["train_images"] for p in points]
    for key, name, marker in (
        ("top1_raw_test", "tested on raw val", "o"),
        ("top1_own_test", "tested on val at its own setting", "s"),
    ):
        ys = [p[key] for p in points]
        es = [p[key + "_stderr"] for p in points]
        ax.errorbar(xs, ys, yerr=es, marker=marker, capsize=2, ls="-" if marker == "o" else "--", label=name)
    for p in points:
        ax.annotate(f"{p['setting']}\n{p['train_bytes_per_image']:.0f} B/img", (p["train_images"], p["top1_raw_test"]),
                    textcoords="offset points", xytext=(4, 6), fontsize=7)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("training images kept (same total bytes)")
    ax.set_ylabel("test top-1")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    p = bench_parser(__doc__, out="results/storage_budget_10cls")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument(
        "--holdout-per-class", type=int, default=50, help="kept out of training, as everywhere else"
    )
    p.add_argument("--budget-quality", type=int, default=10)
    p.add_argument(
        "--settings", nargs="+", default=["q=10", "q=30", "q=90", "png"], help="q=<jpeg quality> or png"
    )
    p.add_argument(
        "--steps",
        type=int,
        default=108,
        help="optimiser steps for every point (108 = 3 epochs of the full set)",
    )
    p.add_argument(
        "--warmup-steps", type=int, default=18, help="linear warm-up steps (1/6 of 108), then cosine to zero"
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--replot", action="store_true", help="only redraw the PNG from --out's result.json")
    args = p.parse_args()
    start_bench(args)
    if args.replot:
        result = json.loads((Path(args.out) / "result.json").read_text())
        plot(result["points"], Path(args.out) / "storage_budget.png", title(result, args.num_classes))
        return
    from datamodules.tiny_imagenet import TinyImageNetDataModule

    dm = TinyImageNetDataModule(
        root=args.data, num_classes=args.num_classes, holdout_per_class=args.holdout_per_class, num_workers=0
    )
    dm.setup("fit")
    dm.setup("test")
    train, test = dm.train_set, dm.test_set
    _, budget_files = coded_train_set(train, f"q={args.budget_quality}")
    budget = int(budget_files.sum())
    print(f"budget: {len(train)} images at JPEG q={args.budget_quality} = {budget} bytes", flush=True)
    raw = make_codec("none")
    points = []
    for setting in args.settings:
        start = time.time()
        coded, file_bytes = coded_train_set(train, setting)
        k, idx = first_k_per_class(train.labels, file_bytes, budget)
        if k == 0:
            print(f"{setting}: not even one image per class fits the budget; skipped", flush=True)
            continue
        subset = coded.subset(idx, train.transform)
        classifier, steps = train_from_scratch(
            subset, dm.num_classes, args.steps, args.warmup_steps, dm.batch_size, args.seed
        )
        own = raw if setting == "png" else make_codec("jpeg", int(setting[2:]))
        rows = {
            "raw": evaluate_baseline(raw, classifier, test.images, test.labels),
            "own": evaluate_baseline(own, classifier, test.images, test.labels),
        }
        points.append({
            "setting": setting, "per_class": k, "train_images": len(idx), "train_bytes": int(file_bytes[idx].sum()),
            "train_bytes_per_image": float(file_bytes[idx].mean()), "budget_used": float(file_bytes[idx].sum() / budget),
            "steps": steps, "epochs_over_subset": steps / math.ceil(len(idx) / dm.batch_size),
            "top1_raw_test": rows["raw"]["top1"], "top1_raw_test_stderr": rows["raw"]["top1_stderr"],
            "top1_own_test": rows["own"]["top1"], "top1_own_test_stderr": rows["own"]["top1_stderr"],
            "own_test_setting": rows["own"]["setting"], "own_test_bytes_per_image": rows["own"]["bytes_per_image"],
            "minutes": round((time.time() - start) / 60, 1),
            "_correct": {key: r["correct"] for key, r in rows.items()},
        })  # fmt: skip
        print({k_: v for k_, v in points[-1].items() if k_ != "_correct"}, flush=True)
    base = points[0]["_correct"]
    for pt in points:
        for key in ("raw", "own"):
            d = paired_difference(pt["_correct"][key], base[key])
            pt[f"diff_vs_{args.settings[0]}_{key}_test"] = {
                "diff": d["diff"],
                "bootstrap_ci95": d["bootstrap_ci95"],
            }
    for pt in points:
        pt.pop("_correct")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "budget_bytes": budget, "budget": f"all {len(train)} train images as JPEG q={args.budget_quality}",
        "test_images": len(test), "recipe": {"model": "resnet18 from scratch (reference recipe)", "steps": args.steps,
        "warmup_steps": args.warmup_steps, "batch_size": dm.batch_size, "lr": 0.1, "seed": args.seed,
        "full_set_epochs_equivalent": args.steps * dm.batch_size / len(train)}, "points": points,
    }  # fmt: skip
    write_json(out / "result.json", result)
    plot(points, out / "storage_budget.png", title(result, args.num_classes))
    write_provenance(out / "provenance.json", args=vars(args), torch_threads=torch.get_num_threads())
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
