"""Which reference table a run may compare itself with, and the one it measures when none matches its data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from taskcodec.evaluation import read_per_image
from taskcodec.reference_table import data_mismatch, measure_reference_table

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "baselines_10cls" / "rate_accuracy.csv"
TINY_10 = {"_target_": "datamodules.tiny_imagenet.TinyImageNetDataModule", "root": "/elsewhere/tiny-imagenet-100.zip",
           "num_classes": 10, "first_class": 0, "holdout_per_class": 50, "batch_size": 32, "num_workers": 0, "seed": 0,
           "download": False, "return_boxes": False, "pin_memory": False, "augment": True,
           "augment_policy": "trivialaugment", "jpeg_augment": None, "extra_classes": 0, "train_per_class": None}  # fmt: skip


def test_a_committed_table_matches_only_the_test_images_it_was_made_on():
    assert data_mismatch(COMMITTED, TINY_10) is None  # another clone's path, training-only options differ: same images
    why = data_mismatch(COMMITTED, TINY_10 | {"first_class": 90})
    assert why and "first_class" in why
    imagenette = {"_target_": "datamodules.imagenette.ImagenetteDataModule", "root": "x/imagenette-160.zip",
                  "num_classes": 10, "size": 128, "crop_pct": 0.875}  # fmt: skip
    assert "_target_" in data_mismatch(COMMITTED, imagenette)
    assert "no reference table" in data_mismatch(ROOT / "results" / "absent.csv", TINY_10)


def test_a_table_is_measured_on_the_runs_own_images(tmp_path):
    torch.manual_seed(0)
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3)).eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    path = measure_reference_table(classifier, images, labels, tmp_path / "t", qualities=(10, 90))
    rows = path.read_text().splitlines()
    assert [r.split(",")[:2] for r in rows[1:]] == [["none", "raw"], ["jpeg", "q=10"], ["jpeg", "q=90"]]
    per_image = read_per_image(path.parent)
    assert len(per_image["none|raw"]) == 6 and len(per_image["jpeg|q=10"]) == 6
    sizes = [float(r.split(",")[2]) for r in rows[2:]]
    assert sizes[0] < sizes[1]  # real JPEG files: quality 10 is smaller than 90
    assert json.loads((path.parent / "rate_accuracy.json").read_text())[0]["n"] == 6
