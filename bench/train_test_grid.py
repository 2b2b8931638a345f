"""Train x test compression grid: the reference fine-tuned on coded train images, tested at every setting.

    OMP_NUM_THREADS=1 python bench/train_test_grid.py [--data ZIP --epochs 2 --qualities 5 10 20 50 90 --factor 2]
        [--precision bf16-mixed]

For each training setting (raw -- the control --, JPEG at each quality, downsampling by ``factor``)
the train images are passed once through the real encoder and decoder (``map_images``) and the
reference checkpoint is fine-tuned on them with one recipe (``evaluate.finetune_classifier``: same
epochs, learning rate, seed and batch order), so rows differ only in their data. Every fine-tuned
classifier, and the reference itself untouched, is then scored at every test setting on the 500
official val images of the first 10 classes (real bytes via ``evaluate_baseline``) and on the
train split's hold-out (50 images/class) coded the same way. Paired differences are against the
clean reference on raw test images, and against the raw-fine-tuned control at the same test
setting.

``finetuned_rows.json`` holds table rows (``taskcodec.evaluation.COLUMNS`` + per-image
``correct``) for ``jpeg+finetuned`` and ``downsample+finetuned``: at each test setting the cell of
the training setting that does best on the *hold-out* (chosen there, reported on test). Join them
to a rate-accuracy table with ``evaluate.py extra_rows=[...]``.

Writes grid.csv/.json, grid.png (heat map), finetuned_rows.json and provenance.json to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluate import codec_round_trip, finetune_classifier, join_extra_rows  # noqa: E402
from taskcodec.baselines import Codec, make_codec  # noqa: E402
from taskcodec.curves import paired_difference  # noqa: E402
from taskcodec.evaluation import COLUMNS, add_paired, evaluate_baseline, headline, read_per_image  # noqa: E402
from taskcodec.models import load_image_classifier  # noqa: E402
from taskcodec.models.classifier import reference_id  # noqa: E402
from taskcodec.provenance import bench_parser, start_bench, write_json, write_provenance  # noqa: E402

REFERENCE = "reference"  # the training "setting" of the untouched reference checkpoint
CELL_KEYS = [
    "train", "test", "top1", "top1_stderr", "bytes_per_image", "payload_bytes_per_image", "holdout_top1",
    "diff_vs_ref", "diff_ci95_lo", "diff_ci95_hi", "diff_vs_control", "control_ci95_lo", "control_ci95_hi", "n",
]  # fmt: skip


def label(codec: Codec) -> str:
    """Short name of a setting: ``raw``, ``q=10``, ``f=2``."""
    return "raw" if codec.name == "none" else codec.setting.split(",")[0]


def run_grid(
    ckpt: str, datamodule, train_codecs: list[Codec], test_codecs: list[Codec], epochs: int, lr: float = 0.01,
    seed: int = 42, root_dir: str | Path = ".", batch_size: int = 250, precision: str = "32-true",
) -> list[dict]:  # fmt: skip
    """Every (training setting, test setting) cell, plus the untouched reference's row (train ``reference``).

    ``datamodule`` must be set up for fit and test. Each cell is a table row (with ``correct``)
    plus ``train``, ``test`` and ``holdout_top1`` (the same classifier on the coded hold-out).
    """
    train, holdout, test = datamodule.train_set, datamodule.holdout_set, datamodule.test_set
    classifiers = [(REFERENCE, load_image_classifier(ckpt).eval())]
    cells = []
    for codec in [None, *train_codecs]:
        if codec is not None:
            start = time.time()
            tuned = finetune_classifier(
                ckpt, train.map_images(codec_round_trip(codec)), holdout.map_images(codec_round_trip(codec)),
                epochs, lr, datamodule.batch_size, seed, root_dir, precision,
            )  # fmt: skip
            classifiers = [(label(codec), tuned)]
            print(f"fine-tuned on {label(codec)} in {time.time() - start:.0f} s", flush=True)
        name, classifier = classifiers[0]
        for tc in test_codecs:
            row = evaluate_baseline(tc, classifier, test.images, test.labels, batch_size)
            held = evaluate_baseline(tc, classifier, holdout.images, holdout.labels, batch_size)
            cells.append(row | {"train": name, "test": label(tc), "holdout_top1": held["top1"]})
            print(f"  train {name:>9} test {label(tc):>5}: top-1 {row['top1']:.3f} (hold-out {held['top1']:.3f}), "
                  f"{row['bytes_per_image']:.0f} B", flush=True)  # fmt: skip
    add_paired_cells(cells)
    return cells


def add_paired_cells(cells: list[dict]) -> None:
    """Paired differences: vs the reference on raw test images, and vs the raw-fine-tuned control per test setting."""
    ref = next(c for c in cells if c["train"] == REFERENCE and c["test"] == "raw")
    control = {c["test"]: c for c in cells if c["train"] == "raw"}
    for c in cells:
        d = paired_difference(c["correct"], ref["correct"])
        c.update(
            diff_vs_ref=d["diff"],
            diff_se=d["se"],
            diff_ci95_lo=d["bootstrap_ci95"][0],
            diff_ci95_hi=d["bootstrap_ci95"][1],
        )
        if c["test"] in control:
            d = paired_difference(c["correct"], control[c["test"]]["correct"])
            c.update(
                diff_vs_control=d["diff"],
                control_ci95_lo=d["bootstrap_ci95"][0],
                control_ci95_hi=d["bootstrap_ci95"][1],
            )


def best_cells(
    cells: list[dict], candidates: list[str], tests: list[str], by: str = "holdout_top1"
) -> dict[str, dict]:
    """For each test setting, the cell of the training setting (among ``candidates``) best by ``by``.

    ``holdout_top1`` is the honest choice (selected on the hold-out, reported on test); ``top1``
    would select on the test set itself and is given beside it only to show what that would claim.
    Ties go to the earlier candidate.
    """
    best = {}
    for t in tests:
        pool = [c for name in candidates for c in cells if c["train"] == name and c["test"] == t]
        best[t] = max(pool, key=lambda c: c[by])  # max keeps the first of equals
    return best


def finetuned_rows(best: dict[str, dict], codec_name: str) -> list[dict]:
    """Table rows (COLUMNS + ``correct``) for ``<codec>+finetuned``; the setting names the chosen training."""
    rows = []
    for cell in best.values():
        row = {k: cell.get(k) for k in COLUMNS} | {"correct": [bool(x) for x in cell["correct"]]}
        row.update(codec=f"{codec_name}+finetuned", setting=f"{cell['setting']},trained={cell['train']}")
        rows.append(row)
    return rows


def plot_grid(cells: list[dict], trains: list[str], tests: list[str], path: Path, title: str) -> Path:
    """Heat map of test top-1: rows = training setting, columns = test setting (with its bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    at = {(c["train"], c["test"]): c for c in cells}
    grid = np.array([[at[(tr, te)]["top1"] for te in tests] for tr in trains])
    fig, ax = plt.subplots(figsize=(1.2 * len(tests) + 2.5, 0.55 * len(trains) + 1.8))
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    for i, tr in enumerate(trains):
        for j, te in enumerate(tests):
            c = at[(tr, te)]
            diag = tr == te
            ax.text(j, i, f"{c['top1']:.3f}\n{c['diff_vs_control']:+.3f}" if "diff_vs_control" in c else f"{c['top1']:.3f}",
                    ha="center", va="center", fontsize=7, color="w" if c["top1"] < grid.mean() else "k",
                    fontweight="bold" if diag else "normal")  # fmt: skip
    ax.set_xticks(
        range(len(tests)),
        [f"{te}\n{at[(trains[0], te)]['bytes_per_image']:.0f} B" for te in tests],
        fontsize=8,
    )
    ax.set_yticks(
        range(len(trains)),
        [("reference (no fine-tune)" if tr == REFERENCE else f"fine-tuned on {tr}") for tr in trains],
        fontsize=8,
    )
    ax.set_xlabel("test setting (mean bytes/image)")
    ax.set_ylabel("training setting")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="test top-1")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(
    cells: list[dict], trains: list[str], tests: list[str], families: dict, out: Path, meta: dict
) -> dict:
    """grid.csv/.json, grid.png and finetuned_rows.json; returns the summary written into grid.json."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "grid.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CELL_KEYS, extrasaction="ignore")
        w.writeheader()
        w.writerows(cells)
    rows, selection = [], {}
    for codec_name, (candidates, family_tests) in families.items():
        honest = best_cells(cells, candidates, family_tests)
        oracle = best_cells(cells, candidates, family_tests, by="top1")
        rows += finetuned_rows(honest, codec_name)
        selection[codec_name] = {
            t: {"trained": honest[t]["train"], "holdout_top1": honest[t]["holdout_top1"], "top1": honest[t]["top1"],
                "bytes_per_image": honest[t]["bytes_per_image"], "diff_vs_ref": honest[t]["diff_vs_ref"],
                "diff_ci95": [honest[t]["diff_ci95_lo"], honest[t]["diff_ci95_hi"]],
                "reference_top1_same_test": next(c["top1"] for c in cells if c["train"] == REFERENCE and c["test"] == t),
                "best_on_test_would_be": {"trained": oracle[t]["train"], "top1": oracle[t]["top1"]}}
            for t in family_tests
        }  # fmt: skip
    summary = meta | {
        "best_cell_by_holdout": selection,
        "cells": [{k: c.get(k) for k in CELL_KEYS} for c in cells],
    }
    write_json(out / "grid.json", summary)
    # rows name the reference they were measured against: evaluate.py joins them only to its table
    write_json(out / "finetuned_rows.json", [r | {"reference_id": meta.get("reference_id")} for r in rows], indent=None)
    plot_grid(cells, trains, tests, out / "grid.png", meta.get("title", ""))
    return summary


def fair_peer_headline(table: Path, rows_file: Path) -> dict:
    """``headline()`` of an existing evaluate.py table with ``rows_file`` joined, re-measuring nothing.

    The same join and paired statistics as ``evaluate.py reuse_baselines=TABLE extra_rows=[FILE]``
    would give, for a quick look before the table itself is re-made.
    """
    rows = json.loads((table / "rate_accuracy.json").read_text())
    per_image = read_per_image(table)
    for r in rows:
        r["correct"] = per_image[f"{r['codec']}|{r['setting']}"]
    ref_id = (json.loads((table / "provenance.json").read_text()).get("reference") or {}).get("id")
    rows = join_extra_rows(rows, [rows_file], len(rows[0]["correct"]), ref_id)
    add_paired(rows)
    return headline(rows)


def main() -> None:
    p = bench_parser(__doc__, out="results/train_test_grid_10cls")
    p.add_argument("--ckpt", default="logs/reference/10cls/checkpoints/best.ckpt")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--qualities", type=int, nargs="+", default=[5, 10, 20, 50, 90])
    p.add_argument("--factor", type=int, default=2, help="downsample factor of the second grid")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument(
        "--precision", default="32-true", choices=["32-true", "bf16-mixed"],
        help="Lightning precision of the fine-tuning steps (scoring is always fp32); bf16-mixed as the 100-class reference",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--table", default="results/split_10cls", help="evaluate.py output for headline_fair_peer.json"
    )
    p.add_argument(
        "--peer-only", action="store_true", help="only (re)write headline_fair_peer.json from --out's rows"
    )
    args = p.parse_args()
    start_bench(args)
    out, table = Path(args.out), Path(args.table)
    if not args.peer_only:
        run_and_write(args)
    if (table / "rate_accuracy.json").is_file():
        head = fair_peer_headline(table, out / "finetuned_rows.json")
        write_json(out / "headline_fair_peer.json", {"table": str(table)} | head)
        print(f"headline with the fair peer: {out / 'headline_fair_peer.json'}")


def run_and_write(args: argparse.Namespace) -> None:
    """The grid itself: data, fine-tuning, scoring, outputs."""
    from datamodules import study_datamodule

    dm = study_datamodule(args.dataset, args.data, args.num_classes)
    dm.setup("fit")
    dm.setup("test")
    raw, jpegs, down = (
        make_codec("none"),
        [make_codec("jpeg", q) for q in args.qualities],
        make_codec("downsample", args.factor),
    )
    codecs = [raw, *jpegs, down]
    start = time.time()
    cells = run_grid(args.ckpt, dm, codecs, codecs, args.epochs, args.lr, args.seed, args.out, precision=args.precision)
    names = [label(c) for c in codecs]
    families = {"jpeg": (names[:-1], names[1:-1]), "downsample": (["raw", names[-1]], [names[-1]])}
    meta = {
        "title": f"{args.num_classes} classes: fine-tuned {args.epochs} ep at lr {args.lr} from the reference; "
                 f"test n={len(dm.test_set)}; cell: top-1 / vs raw-fine-tuned",
        "train_images": len(dm.train_set), "holdout_images": len(dm.holdout_set), "test_images": len(dm.test_set),
        "recipe": {"epochs": args.epochs, "lr": args.lr, "seed": args.seed, "batch_size": dm.batch_size,
                   "from": args.ckpt, "warmup_epochs": 0.1, "precision": args.precision},
        "selection": "best cell per test setting chosen by hold-out top-1 (train split, 50/class, coded at the test setting)",
        "minutes": round((time.time() - start) / 60, 1),
        "reference_id": reference_id(args.ckpt),
    }  # fmt: skip
    summary = write_outputs(cells, [REFERENCE, *names], names, families, Path(args.out), meta)
    write_provenance(
        Path(args.out) / "provenance.json", args=vars(args), torch_threads=torch.get_num_threads()
    )
    print(json.dumps(summary["best_cell_by_holdout"], indent=1))


if __name__ == "__main__":
    main()
