"""Paired top-1 differences between rows of one rate-accuracy table (the same images, image by image).

evaluate.py pairs every row with the reference; this compares two codecs with each other, e.g. a
client trained with extra data against the same client without it:

    python bench/paired_rows.py results/light_10cls --out results/light_paired_10cls \
        --pair "taskcodec-light-8x16x32k3relu-layer1-factorized+kd+2stage+x90|lmbda=1" \
               "taskcodec-light-8x16x32k3relu-layer1-factorized+kd+2stage|lmbda=1"

Each ``--pair A B`` names two rows as ``codec|setting`` (the keys of the table's
``rate_accuracy_per_image.json``). Writes ``paired.json`` to ``--out``: per pair, both rows' top-1
and bytes, ``diff`` = top-1(A) − top-1(B) with its McNemar standard error and paired bootstrap 95%
interval (``taskcodec.curves.paired_difference``), and the bytes ratio A/B.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from taskcodec.curves import paired_difference  # noqa: E402
from taskcodec.errors import DataError  # noqa: E402
from taskcodec.evaluation import read_per_image  # noqa: E402
from taskcodec.provenance import bench_parser, run_provenance, start_bench, write_json  # noqa: E402


def compare(table: Path, pairs: list[tuple[str, str]]) -> list[dict]:
    """The paired difference of each (A, B) pair of ``codec|setting`` rows of the table in ``table``."""
    per_image_path, rows_path = table / "rate_accuracy_per_image.json", table / "rate_accuracy.json"
    if not per_image_path.is_file() or not rows_path.is_file():
        raise DataError(f"{table} has no rate_accuracy.json / rate_accuracy_per_image.json: run evaluate.py for it first")
    per_image = read_per_image(table)
    rows = {f"{r['codec']}|{r['setting']}": r for r in json.loads(rows_path.read_text())}
    out = []
    for a, b in pairs:
        unknown = [k for k in (a, b) if k not in per_image or k not in rows]
        if unknown:
            raise DataError(f"{table} has no row {unknown}; its rows are: {sorted(per_image)}")
        d = paired_difference(per_image[a], per_image[b])
        ra, rb = rows[a], rows[b]
        out.append({
            "a": a, "b": b, "images": len(per_image[a]),
            "top1_a": ra["top1"], "top1_b": rb["top1"], "bytes_a": ra["bytes_per_image"], "bytes_b": rb["bytes_per_image"],
            "diff": d["diff"], "diff_se": d["se"], "diff_ci95": d["bootstrap_ci95"],
            "bytes_ratio": ra["bytes_per_image"] / rb["bytes_per_image"],
        })  # fmt: skip
    return out


def main() -> None:
    p = bench_parser(__doc__, out="results/paired", threads=None, data=False)
    p.add_argument("table", type=Path, help="a results folder evaluate.py wrote")
    p.add_argument("--pair", nargs=2, action="append", required=True, metavar=("A", "B"), help="two rows, codec|setting")
    args = p.parse_args()
    start_bench(args)
    result = {"table": str(args.table), "pairs": compare(args.table, [tuple(x) for x in args.pair]), **run_provenance()}
    write_json(Path(args.out) / "paired.json", result)
    for q in result["pairs"]:
        lo, hi = q["diff_ci95"]
        print(f"{q['a']}  vs  {q['b']}: {100 * q['diff']:+.1f} pt (95% CI {100 * lo:+.1f} to {100 * hi:+.1f}), bytes x{q['bytes_ratio']:.2f}")


if __name__ == "__main__":
    main()
