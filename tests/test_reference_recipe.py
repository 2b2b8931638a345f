"""The strong reference recipe: augmentation policies, JPEG re-coding, mixup/cutmix, EMA, resumable clock."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import CPU, DATA, compose_cfg
from torchvision.transforms import v2

from datamodules.arrays import train_transform
from lightning_modules.classifier import ClassifierModule
from taskcodec.errors import ConfigError


def test_policies_and_jpeg_recoding_keep_float_images_in_range() -> None:
    x = torch.rand(3, 64, 64)
    for policy in (None, "trivialaugment", "randaugment"):
        out = train_transform(policy=policy, jpeg_quality=[5, 95], jpeg_prob=1.0)(x)
        assert out.dtype == torch.float32 and out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    steps = train_transform(policy="trivialaugment", jpeg_quality=[5, 95]).transforms
    assert any(isinstance(s, v2.TrivialAugmentWide) for s in steps)
    assert any(isinstance(s, v2.RandomApply) and isinstance(s.transforms[0], v2.JPEG) for s in steps)
    # JPEG at quality 5 visibly changes a noisy image; without re-coding nothing but crop/flip happens
    flat = train_transform(pad=0, jpeg_quality=[5, 5], jpeg_prob=1.0)(x)
    assert (flat - x).abs().mean() > 0.05 or (flat - x.flip(-1)).abs().mean() > 0.05


def test_resized_crop_hands_the_codec_8bit_images_in_range() -> None:
    """Imagenette's random resized crop resamples: its output goes back to the 8-bit grid inside [0, 1], which
    the codec checks (a float rounding error above 1 stopped the light client's first stage)."""
    from taskcodec.models.light import LightClientCodec

    x = torch.rand(8, 3, 160, 160)
    x[:, :, :80] = 1.0  # saturated areas, where resampling's rounding lands above 1
    t = train_transform(size=128, min_scale=0.35)
    out = torch.stack([t(im) for im in x])
    assert out.shape == (8, 3, 128, 128) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1
    assert torch.allclose(out * 255, (out * 255).round(), atol=1e-3)  # on the 8-bit grid
    LightClientCodec(channels=(8, 16, 32), kernel=3, act="relu", entropy="factorized")._pad(out)  # the codec's input check


def test_bad_recipe_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="augment_policy"):
        train_transform(policy="autoaugment-v9")
    with pytest.raises(ConfigError, match="jpeg_augment"):
        train_transform(jpeg_quality=[50, 10])
    with pytest.raises(ConfigError, match="ema_decay"):
        ClassifierModule(num_classes=3, ema_decay=1.0)
    with pytest.raises(ConfigError, match="mixup"):
        ClassifierModule(num_classes=3, mixup=-0.1)


def test_mixup_cutmix_policy_and_jpeg_train_and_the_clock_resumes(tmp_path) -> None:
    """One epoch with every option on, then a resumed second epoch: the wall-time count carries on."""
    from train import train

    common = [*DATA, *CPU, "experiment=reference", "logger=csv", "trainer.limit_train_batches=2",
              "trainer.limit_val_batches=1", "test=false", "model.mixup=0.2", "model.cutmix=1.0",
              "data.augment_policy=randaugment", "data.jpeg_augment=[5,95]"]  # fmt: skip
    first = train(compose_cfg("train.yaml", [*common, "trainer.max_epochs=1"], tmp_path / "a"))
    ckpt = torch.load(first["final_ckpt"], weights_only=False)
    clock = next(v for k, v in ckpt["callbacks"].items() if "EpochClock" in k)
    assert clock["elapsed"] > 0
    final = tmp_path / "a" / "checkpoints" / "final.ckpt"  # a finished run goes on from its full final state
    train(compose_cfg("train.yaml", [*common, "trainer.max_epochs=2", f"ckpt_path={final}"], tmp_path / "a"))
    first_rows = [r for r in csv.DictReader((tmp_path / "a" / "csv" / "metrics.csv").open()) if r.get("time/elapsed_s")]
    assert [r["epoch"] for r in first_rows] == ["0"]  # the first session's curve survives the resumed one
    (resumed,) = (tmp_path / "a" / "csv").glob("resumed_*/metrics.csv")  # which logs into its own folder
    rows = [r for r in csv.DictReader(resumed.open()) if r.get("time/elapsed_s")]
    assert [r["epoch"] for r in rows] == ["1"]  # only the resumed epoch ran here
    assert float(rows[0]["time/elapsed_s"]) > clock["elapsed"]  # and its clock started from the first run's
