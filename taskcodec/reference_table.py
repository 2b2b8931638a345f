"""The reference table a training run compares itself with: a committed one of the same data, or one measured now.

A run's summary answers "how many fewer bytes than JPEG, at what top-1 difference from the
reference?" That needs an ``evaluate.py`` table of the *same test images*: its reference's
per-image results (for the paired difference) and its JPEG frontier. A committed table matches
only the data it was made on (its ``provenance.json`` records the data config), so a run on other
data (another dataset, another class range, a user's own folder) measures JPEG on its own test
images with its own teacher instead of borrowing another dataset's numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

#: data options that change only training (augmentation, loading), never which test images there are
TRAINING_ONLY = frozenset({
    "batch_size", "num_workers", "pin_memory", "download", "augment", "augment_policy", "jpeg_augment",
    "extra_classes", "train_per_class", "return_boxes", "store_size", "min_scale", "holdout_per_class",
})  # fmt: skip
#: JPEG qualities measured on a run's own test images (evaluate.py's default sweep)
JPEG_QUALITIES = (1, 3, 5, 10, 20, 30, 50, 75, 90, 95)


def _test_defining(data: Mapping) -> dict:
    """The data options that decide the test images; paths compare by file name (a table is made in another clone)."""
    out = {}
    for key, value in data.items():
        if key in TRAINING_ONLY:
            continue
        if key in ("root", "test_root") and value is not None:
            value = Path(str(value)).expanduser().name
        out[key] = value
    return out


def data_mismatch(table: Path, data: Mapping) -> str | None:
    """Why ``table`` is not of ``data``'s test images, or None when it is (same test-defining options).

    A table without a ``provenance.json`` beside it cannot be checked and is taken as it is, as before.
    """
    if not table.is_file():
        return f"no reference table at {table}"
    prov = table.parent / "provenance.json"
    if not prov.is_file():
        return None
    theirs = (json.loads(prov.read_text()).get("config") or {}).get("data") or {}
    mine, theirs = _test_defining(data), _test_defining(theirs)
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if not differ:
        return None
    shown = ", ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in differ[:4])
    return f"{table} is of other test images ({shown})"


def measure_reference_table(classifier, images: np.ndarray, labels: np.ndarray, out_dir: str | Path,
                            qualities: tuple[int, ...] = JPEG_QUALITIES, batch_size: int = 250) -> Path:
    """The reference and JPEG rows on ``images``, classified by ``classifier``, written as an evaluate.py table.

    Real JPEG files from Pillow at each quality, decoded and classified; the table (``rate_accuracy.csv`` and
    its per-image results) lands in ``out_dir``. Returns the CSV's path.
    """
    from taskcodec.baselines import make_codec
    from taskcodec.evaluation import add_paired, evaluate_baseline, write_table

    rows = [evaluate_baseline(make_codec("none", None), classifier, images, labels, batch_size)]
    rows += [evaluate_baseline(make_codec("jpeg", int(q)), classifier, images, labels, batch_size) for q in qualities]
    add_paired(rows)
    csv_path, _ = write_table(rows, out_dir, "rate_accuracy")
    return csv_path
