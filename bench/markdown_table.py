"""Print an evaluate.py table as the Markdown rows the README quotes (no number is typed by hand).

    python bench/markdown_table.py results/split_10cls/rate_accuracy.csv [CODEC_PREFIX ...]
"""

from __future__ import annotations

import csv
import sys


def main(path: str, prefixes: list[str]) -> None:
    print("| codec | setting | bytes/image | est. bytes | p99 / max bytes | top-1 | paired diff vs ref (95% CI) "
          "| client MACs (share) | client encode vs JPEG |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in csv.DictReader(open(path)):
        if prefixes and not r["codec"].startswith(tuple(prefixes)):
            continue
        est = f"{float(r['est_bytes_per_image']):.1f}" if r["est_bytes_per_image"] not in ("", "nan") else "–"
        diff = "–"
        if r.get("diff_vs_ref") not in (None, ""):
            diff = (f"{100 * float(r['diff_vs_ref']):+.1f} pt ({100 * float(r['diff_ci95_lo']):+.1f} to "
                    f"{100 * float(r['diff_ci95_hi']):+.1f})")  # fmt: skip
        tail = f"{float(r['bytes_p99']):.0f} / {float(r['bytes_max']):.0f}" if r.get("bytes_p99") else "–"
        share = f"{100 * float(r['client_macs_share']):.1f}%" if r.get("client_macs_share") else "–"
        speed = f"{float(r['client_encode_vs_jpeg']):.2f}x" if r.get("client_encode_vs_jpeg") else "–"
        print(f"| {r['codec']} | {r['setting']} | {float(r['bytes_per_image']):.1f} | {est} | {tail} | "
              f"{float(r['top1']):.3f} | {diff} | {share} | {speed} |")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
