"""A finished training run, recorded as a results folder: what it printed, its config and its learning curve.

    python bench/run_record.py logs/default/10cls --out results/default_10cls

Copies the run's ``result.json`` (test metrics, real and estimated bytes, the lines ``train.py``
printed and the wall time), its resolved ``.hydra/config.yaml`` and its CSV log(s) into ``--out``,
with ``provenance.json``. A run resumed across sessions has one CSV log per session; they are
concatenated in order into ``metrics.csv``. A run of stages (the default ``experiment=light``) is
recorded as a whole and, per stage, in ``--out/<stage>/``.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from taskcodec.errors import DataError  # noqa: E402
from taskcodec.provenance import bench_parser, write_json, write_provenance  # noqa: E402


def main() -> None:
    p = bench_parser(__doc__, data=False, threads=None)
    p.add_argument("run", type=Path, help="a run folder of train.py (hydra.run.dir) that has finished")
    args = p.parse_args()
    run = record(args.run, Path(args.out))
    for stage in run.get("stages", {}):
        record(args.run / stage, Path(args.out) / stage)
    summary = run.get("summary", [])
    print("\n".join([*summary, f"recorded {args.run} -> {args.out}"]))


def relative(value, root: str = str(ROOT) + "/"):
    """Paths relative to the repository (in nested results too), so the record reads the same on every machine."""
    if isinstance(value, dict):
        return {k: relative(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [relative(v, root) for v in value]
    return value.replace(root, "") if isinstance(value, str) else value


def record(run_dir: Path, out: Path) -> dict:
    """Record one finished run folder into ``out``; returns its result."""
    result = run_dir / "result.json"
    if not result.is_file():
        raise DataError(f"{run_dir} has no result.json: the run has not finished (train.py writes it at the end)")
    out.mkdir(parents=True, exist_ok=True)
    run = relative(json.loads(result.read_text()))
    write_json(out / "result.json", run)
    config = run_dir / ".hydra" / "config.yaml"
    if config.is_file():
        shutil.copyfile(config, out / "config.yaml")
    logs = sorted(run_dir.glob("csv/metrics.csv")) + sorted(run_dir.glob("csv/resumed_*/metrics.csv"))
    rows = [r for log in logs for r in csv.DictReader(log.open())]
    if rows:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with (out / "metrics.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    write_provenance(out / "provenance.json", run=str(run_dir), csv_logs=[str(x) for x in logs])
    return run


if __name__ == "__main__":
    main()
