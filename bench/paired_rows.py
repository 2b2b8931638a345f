"""Paired top-1 differences between rows of one rate-accuracy table (the same images, image by image).

evaluate.py pairs every row with the reference; this compares two codecs with each other, e.g. a
client trained with extra data against the same client without it:

    python bench/paired_rows.py results/light_10cls --out results/light_paired_10cls \
        --pair "taskcodec-light-8x16x32k3relu-layer1-factorized+kd+2stage+x90|lmbda=1" \
               "taskcodec-light-8x16x32k3relu-layer1-factorized+kd+2stage|lmbda=1"

Each ``--pair A B`` names two rows as ``codec|setting`` (the keys of the table's
``rate_accuracy_per_image.json``). A row of another table is named ``TABLE::codec|setting``: two
runs that make the same row label (the same client trained for longer, say) are evaluated in
separate tables and paired across them, which is refused unless both tables scored the same
reference on the same images (its id, and its per-image results, identical). Writes ``paired.json`` to ``--out``: per pair, both rows' top-1
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


def _table(table: Path) -> tuple[dict[str, list[bool]], dict[str, dict], dict]:
    """(per-image results, rows by ``codec|setting``, reference record) of one evaluate.py folder."""
    per_image_path, rows_path = table / "rate_accuracy_per_image.json", table / "rate_accuracy.json"
    if not per_image_path.is_file() or not rows_path.is_file():
        raise DataError(f"{table} has no rate_accuracy.json / rate_accuracy_per_image.json: run evaluate.py for it first")
    head = table / "headline.json"
    reference = (json.loads(head.read_text()).get("reference") or {}) if head.is_file() else {}
    rows = {f"{r['codec']}|{r['setting']}": r for r in json.loads(rows_path.read_text())}
    return read_per_image(table), rows, reference


def _same_images(table: Path, other: Path, tables: dict) -> None:
    """Refuse to pair rows of two tables unless they scored one reference on the same images."""
    (pa, _, ra), (pb, _, rb) = tables[table], tables[other]
    if ra.get("id") != rb.get("id") or pa.get("none|raw") != pb.get("none|raw"):
        raise DataError(f"{table} and {other} were not measured with the same reference on the same images "
                        f"(reference {ra.get('id')} against {rb.get('id')}); pair rows of one table, or re-measure")  # fmt: skip


def compare(table: Path, pairs: list[tuple[str, str]]) -> list[dict]:
    """The paired difference of each (A, B) pair of ``codec|setting`` rows of ``table`` (or ``OTHER::codec|setting``)."""
    tables: dict[Path, tuple] = {}

    def row(name: str) -> tuple[str, list[bool], dict]:
        where, key = (Path(name.split("::")[0]), name.split("::", 1)[1]) if "::" in name else (table, name)
        if where not in tables:
            tables[where] = _table(where)
            if where != table:
                tables.setdefault(table, _table(table))
                _same_images(where, table, tables)
        per_image, rows, _ = tables[where]
        if key not in per_image or key not in rows:
            raise DataError(f"{where} has no row {[key]}; its rows are: {sorted(per_image)}")
        return name, per_image[key], rows[key]

    out = []
    for a, b in pairs:
        (a, ca, ra), (b, cb, rb) = row(a), row(b)
        d = paired_difference(ca, cb)
        out.append({
            "a": a, "b": b, "images": len(ca),
            "top1_a": ra["top1"], "top1_b": rb["top1"], "bytes_a": ra["bytes_per_image"], "bytes_b": rb["bytes_per_image"],
            "diff": d["diff"], "diff_se": d["se"], "diff_ci95": d["bootstrap_ci95"],
            "bytes_ratio": ra["bytes_per_image"] / rb["bytes_per_image"],
        })  # fmt: skip
    return out


def main() -> None:
    p = bench_parser(__doc__, out="results/paired", threads=None, data=False)
    p.add_argument("table", type=Path, help="a results folder evaluate.py wrote")
    p.add_argument("--pair", nargs=2, action="append", required=True, metavar=("A", "B"), help="two rows, codec|setting (or TABLE::codec|setting)")
    args = p.parse_args()
    start_bench(args)
    result = {"table": str(args.table), "pairs": compare(args.table, [tuple(x) for x in args.pair]), **run_provenance()}
    write_json(Path(args.out) / "paired.json", result)
    for q in result["pairs"]:
        lo, hi = q["diff_ci95"]
        print(f"{q['a']}  vs  {q['b']}: {100 * q['diff']:+.1f} pt (95% CI {100 * lo:+.1f} to {100 * hi:+.1f}), bytes x{q['bytes_ratio']:.2f}")


if __name__ == "__main__":
    main()
