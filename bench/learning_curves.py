"""Learning curves of train.py runs: hold-out and train top-1 per epoch, stopping epoch, wall time, test top-1.

    python bench/learning_curves.py --out results/references logs/reference/10cls logs/reference/100cls ...
    python bench/learning_curves.py --train --out results/light_curves_10cls logs/light/10cls/c1-lmbda_1/features ...

Reads each run's CSV log (``csv/metrics.csv``, written by ``logger=csv``; ``time/elapsed_s`` is the
cumulative training wall time, kept across resumed sessions) and its resolved config. Writes
``curves.json`` (one entry per run), ``curves.png``, each run's ``<name>.config.yaml`` and
``provenance.json`` to ``--out``. A run still training is reported as such, with its curve so far.
A run is named by its path under ``logs/`` (``light/10cls/c1-lmbda_1/features``). ``--train`` also
draws the train top-1 (dashed; measured on augmented training batches, labelled images only), which
shows where a run stops generalising.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from taskcodec.errors import DataError  # noqa: E402
from taskcodec.provenance import bench_parser, start_bench, write_json, write_provenance  # noqa: E402


def run_name(run: Path) -> str:
    """The run's path under ``logs/`` (its whole path when it is not under a ``logs`` folder)."""
    parts = run.resolve().parts
    return "/".join(parts[len(parts) - parts[::-1].index("logs"):]) if "logs" in parts else str(run)


def read_run(run: Path) -> dict:
    """Per-epoch hold-out metrics and the test result of one reference run folder."""
    epochs: dict[int, dict] = {}
    train: dict[int, float] = {}
    test = {}
    for path in sorted(run.glob("csv/**/metrics.csv")):  # resumed sessions log into csv/resumed_*, in time order
        for r in csv.DictReader(path.open()):
            if r.get("test/acc"):
                test = {"top1": float(r["test/acc"]), "top5": float(r["test/top5"])}
            if r.get("train/acc") and r.get("epoch"):  # the epoch's mean, logged at its end
                train[int(r["epoch"])] = float(r["train/acc"])
            if r.get("val/acc"):
                e = int(r["epoch"])
                epochs[e] = {"epoch": e, "holdout_top1": float(r["val/acc"]), "holdout_loss": float(r["val/loss"]),
                             "elapsed_s": float(r["time/elapsed_s"]) if r.get("time/elapsed_s") else None}  # fmt: skip
    curve = [epochs[e] | {"train_top1": train.get(e)} for e in sorted(epochs)]
    cfg_path = run / ".hydra" / "config.yaml"
    cfg = cfg_path.read_text() if cfg_path.is_file() else ""
    best = max(curve, key=lambda c: c["holdout_top1"]) if curve else None
    done = (run / "result.json").is_file()  # train.py writes it when the run has finished
    max_epochs = next((int(line.split(":")[1]) for line in cfg.splitlines() if line.strip().startswith("max_epochs:")), None)
    patience = next((int(line.split(":")[1]) for line in cfg.splitlines() if line.strip().startswith("patience:")), None)
    stopped = curve[-1]["epoch"] if curve else None
    return {
        "run": run_name(run),
        "finished": done,
        "epochs_trained": len(curve),
        "max_epochs": max_epochs,
        "early_stopping_patience": patience,
        "stopped_early": bool(done and max_epochs and stopped is not None and stopped + 1 < max_epochs),
        "best_holdout_epoch": best["epoch"] if best else None,
        "best_holdout_top1": best["holdout_top1"] if best else None,
        "wall_time_s": curve[-1]["elapsed_s"] if curve else None,
        "test": test or None,
        "curve": curve,
    }


def plot(runs: list[dict], path: Path, train: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in runs:
        xs = [c["epoch"] + 1 for c in r["curve"]]
        ys = [c["holdout_top1"] for c in r["curve"]]
        label = r["run"].removeprefix("reference/") + ("" if r["finished"] else " (training)")
        if r["test"]:
            label += f", test top-1 {r['test']['top1']:.3f}"
        (line,) = ax.plot(xs, ys, marker=".", label=label)
        if train:
            pts = [(c["epoch"] + 1, c["train_top1"]) for c in r["curve"] if c["train_top1"] is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ls="--", color=line.get_color(), alpha=0.7)
    ax.set_xlabel("epoch")
    ax.set_ylabel("hold-out top-1" + (" (solid) and train top-1 (dashed)" if train else " (EMA weights for the references)"))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = bench_parser(__doc__, threads=None, data=False)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--train", action="store_true", help="also draw each run's train top-1 (dashed)")
    args = ap.parse_args()
    start_bench(args)
    out = Path(args.out)
    missing = [str(r) for r in args.runs if not r.is_dir()]
    if missing:
        raise DataError(f"no run folder {missing}: train it first (dvc.yaml names the stage that does)")
    runs = [read_run(r) for r in args.runs]
    out.mkdir(parents=True, exist_ok=True)
    for r, run in zip(args.runs, runs, strict=True):  # each run's resolved Hydra config beside its curve
        cfg = r / ".hydra" / "config.yaml"
        if cfg.is_file():
            (out / f"{run['run'].replace('/', '_')}.config.yaml").write_text(cfg.read_text())
    write_json(out / "curves.json", runs)
    plot(runs, out / "curves.png", train=args.train)
    write_provenance(out / "provenance.json")
    for r in runs:
        print(json.dumps({k: v for k, v in r.items() if k != "curve"}))


if __name__ == "__main__":
    main()
