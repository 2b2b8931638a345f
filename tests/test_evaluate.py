"""evaluate.py end to end on the sample data: baselines, taskcodec rows, fine-tuning, outputs."""

from __future__ import annotations

import json

import pytest
from conftest import DATA, compose_cfg

from evaluate import evaluate
from taskcodec.errors import CheckpointError
from taskcodec.evaluation import COLUMNS, headline


def cfg_eval(tmp_path, reference_ckpt, *extra):
    return compose_cfg(
        "evaluate.yaml",
        [*DATA, f"classifier_ckpt={reference_ckpt}", f"output_dir={tmp_path}", "wandb.mode=disabled",
         "baselines={jpeg: [10, 75], webp: [50], avif: [50], downsample: [2], downsample_jpeg: [{factor: 2, quality: 50}]}",
         *extra],
        tmp_path,
    )  # fmt: skip


def test_evaluate_baselines_and_codec(reference_ckpt, joint_run, tmp_path) -> None:
    out = evaluate(cfg_eval(tmp_path, reference_ckpt, f"codec_dirs=[{joint_run['dir']}]"))
    rows = out["rows"]
    assert [r["codec"] for r in rows] == ["none", "jpeg", "jpeg", "webp", "avif", "downsample", "downsample_jpeg", "taskcodec-split-layer4-factorized"]
    assert rows[0]["bytes_per_image"] == 64 * 64 * 3 and rows[0]["n"] == 6
    jpeg10, jpeg75 = rows[1], rows[2]
    assert jpeg10["bytes_per_image"] < jpeg75["bytes_per_image"]
    assert jpeg10["payload_bytes_per_image"] < jpeg10["bytes_per_image"]
    codec = rows[-1]
    assert codec["setting"] == "lmbda=0.03" and codec["est_bytes_per_image"] > 0
    assert codec["diff_vs_ref"] == pytest.approx(codec["top1"] - rows[0]["top1"])  # paired, same images
    assert codec["diff_ci95_lo"] <= codec["diff_vs_ref"] <= codec["diff_ci95_hi"]
    per_image = json.loads((tmp_path / "rate_accuracy_per_image.json").read_text())
    assert len(per_image["none|raw"]) == 6
    assert codec["payload_bytes_per_image"] < codec["bytes_per_image"]
    header = (tmp_path / "rate_accuracy.csv").read_text().splitlines()[0].split(",")
    assert header == COLUMNS
    assert len(json.loads((tmp_path / "rate_accuracy.json").read_text())) == len(rows)
    assert (tmp_path / "rate_accuracy.png").stat().st_size > 1000
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["git_revision"] and "config" in prov
    # a later table reuses the reference and baseline rows instead of re-encoding them
    again = evaluate(cfg_eval(tmp_path / "again", reference_ckpt, f"codec_dirs=[{joint_run['dir']}]", f"reuse_baselines={tmp_path}"))
    assert [(r["codec"], r["setting"], r["top1"], r["bytes_per_image"]) for r in again["rows"]] == [
        (r["codec"], r["setting"], r["top1"], r["bytes_per_image"]) for r in rows
    ]
    assert again["rows"][-1]["diff_vs_ref"] == pytest.approx(codec["diff_vs_ref"])


def test_evaluate_train_on_compressed_and_wandb(reference_ckpt, tmp_path) -> None:
    cfg = cfg_eval(tmp_path, reference_ckpt, "baselines={jpeg: [10]}", "wandb.mode=offline",
                   "train_on_compressed={codec: jpeg, setting: 10, epochs: 1}")  # fmt: skip
    rows = evaluate(cfg)["rows"]
    tuned = rows[-1]
    assert tuned["codec"] == "jpeg+finetuned" and tuned["setting"] == rows[1]["setting"]
    assert tuned["bytes_per_image"] == rows[1]["bytes_per_image"]  # same encoder, same bytes
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_evaluate_missing_export(reference_ckpt, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="encoder"):
        evaluate(cfg_eval(tmp_path, reference_ckpt, f"codec_dirs=[{tmp_path}]"))


def test_headline_ratios() -> None:
    rows = [
        {"codec": "none", "setting": "raw", "bytes_per_image": 12288, "payload_bytes_per_image": 12288, "top1": 0.70},
        {"codec": "jpeg", "setting": "q=10", "bytes_per_image": 500, "payload_bytes_per_image": 200, "top1": 0.50},
        {"codec": "jpeg", "setting": "q=50", "bytes_per_image": 1000, "payload_bytes_per_image": 700, "top1": 0.65},
        {"codec": "jpeg", "setting": "q=90", "bytes_per_image": 2000, "payload_bytes_per_image": 1700, "top1": 0.70},
        {"codec": "taskcodec-latent", "setting": "lmbda=1", "bytes_per_image": 100, "payload_bytes_per_image": 96, "top1": 0.695},
        {"codec": "taskcodec-latent", "setting": "lmbda=4", "bytes_per_image": 300, "payload_bytes_per_image": 296, "top1": 0.71},
    ]
    h = headline(rows)["taskcodec-latent"]
    assert h["setting"] == "lmbda=1"  # cheapest within 1 point of the reference
    assert 10 < h["x_fewer_than_jpeg"] < 20  # JPEG frontier between q50 and q90 at top-1 0.695
    assert h["webp_bytes"] is None and h["x_fewer_than_best_webp_avif"] is None


def test_headline_points_below_parity() -> None:
    """Without parity there is still a per-setting comparison; no extrapolation below JPEG's range."""
    rows = [
        {"codec": "none", "setting": "raw", "bytes_per_image": 12288, "payload_bytes_per_image": 12288, "top1": 0.70},
        {"codec": "jpeg", "setting": "q=10", "bytes_per_image": 500, "payload_bytes_per_image": 200, "top1": 0.50},
        {"codec": "jpeg", "setting": "q=50", "bytes_per_image": 1000, "payload_bytes_per_image": 700, "top1": 0.60},
        {"codec": "taskcodec-latent", "setting": "lmbda=1", "bytes_per_image": 250, "payload_bytes_per_image": 245, "top1": 0.60},
        {"codec": "taskcodec-latent", "setting": "lmbda=0.1", "bytes_per_image": 100, "payload_bytes_per_image": 95, "top1": 0.30},
    ]
    h = headline(rows)["taskcodec-latent"]
    assert h["reaches_parity"] is False and "x_fewer_than_jpeg" not in h
    cheap, dear = h["points"]
    assert cheap["setting"] == "lmbda=0.1" and cheap["jpeg_bytes"] is None  # below JPEG's measured range
    assert dear["jpeg_bytes"] == pytest.approx(1000) and dear["x_fewer_than_jpeg"] == pytest.approx(4.0)
    assert dear["jpeg_payload_bytes"] == pytest.approx(700)
