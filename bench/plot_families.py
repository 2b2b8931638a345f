"""One rate-accuracy plot across tables: the split sweep beside the earlier hyperprior (latent/pixel) runs.

    python bench/plot_families.py OUT.png TABLE.csv[:CODEC_PREFIX] ...

Each TABLE is an evaluate.py ``rate_accuracy.csv``; ``:CODEC_PREFIX`` keeps only the taskcodec rows
whose codec starts with it (standard codecs and the reference are taken from the first table only).
The earlier tables were measured with the same reference classifier (the reference run is
deterministic: 0.660 top-1 both times) on the same 500 images, at earlier git revisions (their
``provenance.json`` says which), with CompressAI's rANS coder rather than the range coder.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from taskcodec.evaluation import plot_rate_accuracy  # noqa: E402

NUMERIC = ("bytes_per_image", "top1", "top1_stderr")


def main(out: str, specs: list[str]) -> None:
    rows = []
    for i, spec in enumerate(specs):
        path, _, prefix = spec.partition(":")
        for r in csv.DictReader(open(path)):
            r = {**r, **{k: float(r[k]) for k in NUMERIC}}
            if r["codec"].startswith("taskcodec"):
                if not prefix or r["codec"].startswith(prefix):
                    rows.append(r if i == 0 else {**r, "codec": r["codec"] + " (earlier)"})
            elif i == 0 and r["codec"] in ("none", "jpeg", "webp", "avif"):
                rows.append(r)
    plot_rate_accuracy(rows, out, "10 classes, n=500: split points and entropy models vs the hyperprior family")
    print(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
