"""A finished training run, recorded as a results folder: what it printed, its config and its learning curve.

    python bench/run_record.py logs/default/10cls --out results/default_10cls

Copies the run's ``result.json`` (test metrics, real and estimated bytes, the lines ``train.py``
printed and the wall time), its resolved ``.hydra/config.yaml`` and its CSV log(s) into ``--out``,
with ``provenance.json``. A run resumed across sessions has one CSV log per session; they are
concatenated in order into ``metrics.csv``.
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
    result = args.run / "result.json"
    if not result.is_file():
        raise DataError(f"{args.run} has no result.json: the run has not finished (train.py writes it at the end)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = json.loads(result.read_text())
    root = str(ROOT) + "/"  # paths relative to the repository, so the record reads the same on every machine
    run = {k: v.replace(root, "") if isinstance(v, str) else v for k, v in run.items()}
    write_json(out / "result.json", run)
    config = args.run / ".hydra" / "config.yaml"
    if config.is_file():
        shutil.copyfile(config, out / "config.yaml")
    logs = sorted(args.run.glob("csv/metrics.csv")) + sorted(args.run.glob("csv/resumed_*/metrics.csv"))
    rows = [r for log in logs for r in csv.DictReader(log.open())]
    if rows:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with (out / "metrics.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    write_provenance(out / "provenance.json", run=str(args.run), csv_logs=[str(x) for x in logs])
    summary = run.get("summary", [])
    print("\n".join([*summary, f"recorded {args.run} -> {out}"]))


if __name__ == "__main__":
    main()
