"""Learning curves of the reference runs: hold-out top-1 per epoch, stopping epoch, wall time, test top-1.

    python bench/reference_curves.py --out results/references logs/reference/10cls logs/reference/100cls ...

Reads each run's CSV log (``csv/metrics.csv``, written by ``logger=csv``; ``time/elapsed_s`` is the
cumulative training wall time, kept across resumed sessions) and its resolved config. Writes
``curves.json`` (one entry per run), ``curves.png``, each run's ``<name>.config.yaml`` and
``provenance.json`` to ``--out``. A run
still training is reported as such, with its curve so far.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from taskcodec.provenance import bench_parser, start_bench, write_provenance  # noqa: E402


def read_run(run: Path) -> dict:
    """Per-epoch hold-out metrics and the test result of one reference run folder."""
    epochs: dict[int, dict] = {}
    test = {}
    for path in sorted(run.glob("csv/**/metrics.csv")):
        for r in csv.DictReader(path.open()):
            if r.get("test/acc"):
                test = {"top1": float(r["test/acc"]), "top5": float(r["test/top5"])}
            if r.get("val/acc"):
                e = int(r["epoch"])
                epochs[e] = {"epoch": e, "holdout_top1": float(r["val/acc"]), "holdout_loss": float(r["val/loss"]),
                             "elapsed_s": float(r["time/elapsed_s"]) if r.get("time/elapsed_s") else None}  # fmt: skip
    curve = [epochs[e] for e in sorted(epochs)]
    cfg_path = run / ".hydra" / "config.yaml"
    cfg = cfg_path.read_text() if cfg_path.is_file() else ""
    best = max(curve, key=lambda c: c["holdout_top1"]) if curve else None
    done = (run / "result.json").is_file()  # train.py writes it when the run has finished
    max_epochs = next((int(line.split(":")[1]) for line in cfg.splitlines() if line.strip().startswith("max_epochs:")), None)
    patience = next((int(line.split(":")[1]) for line in cfg.splitlines() if line.strip().startswith("patience:")), None)
    stopped = curve[-1]["epoch"] if curve else None
    return {
        "run": str(run),
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


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in runs:
        xs = [c["epoch"] + 1 for c in r["curve"]]
        ys = [c["holdout_top1"] for c in r["curve"]]
        label = Path(r["run"]).name + ("" if r["finished"] else " (training)")
        if r["test"]:
            label += f", test top-1 {r['test']['top1']:.3f}"
        ax.plot(xs, ys, marker=".", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("hold-out top-1 (EMA weights)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = bench_parser(__doc__, threads=None, data=False)
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    start_bench(args)
    out = Path(args.out)
    runs = [read_run(r) for r in args.runs if r.is_dir()]
    out.mkdir(parents=True, exist_ok=True)
    for r in args.runs:  # each run's resolved Hydra config beside its curve
        cfg = r / ".hydra" / "config.yaml"
        if cfg.is_file():
            (out / f"{r.name}.config.yaml").write_text(cfg.read_text())
    (out / "curves.json").write_text(json.dumps(runs, indent=1))
    plot(runs, out / "curves.png")
    write_provenance(out / "provenance.json")
    for r in runs:
        print(json.dumps({k: v for k, v in r.items() if k != "curve"}))


if __name__ == "__main__":
    main()
