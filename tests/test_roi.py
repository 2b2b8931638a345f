"""ROI JPEG: real bytes, round trips, masks, saliency sources and bad settings."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_codec import SAMPLE, export_tiny
from torch import nn

from taskcodec.baselines import DEFAULT_SWEEPS, JPEG, available_codecs, make_codec
from taskcodec.baselines.roi import ROIJPEG, gradient_saliency, local_variance
from taskcodec.errors import ConfigError
from taskcodec.io import read_rgb

IMAGE = read_rgb(sorted((SAMPLE / "val" / "images").glob("*.JPEG"))[0])


@pytest.mark.parametrize("background", ["flat", "blur"])
@pytest.mark.parametrize("shape", [(64, 64), (37, 23), (23, 37)])
def test_round_trip_and_bytes(background: str, shape: tuple[int, int]) -> None:
    image = np.ascontiguousarray(IMAGE[: shape[0], : shape[1]])
    enc = make_codec("roi_jpeg", {"source": "variance", "fraction": 0.25, "background": background}).encode(image)
    assert enc.file_bytes == len(enc.data)
    assert enc.decoded.shape == image.shape and enc.decoded.dtype == np.uint8
    assert np.array_equal(enc.decoded, np.asarray(Image.open(io.BytesIO(enc.data)).convert("RGB")))
    assert 0 < enc.payload_bytes < enc.file_bytes


def test_roi_is_cheaper_than_plain_jpeg_and_full_fraction_is_plain_jpeg() -> None:
    plain = JPEG(30).encode(IMAGE)
    assert make_codec("roi_jpeg", {"fraction": 0.25, "quality": 30}).encode(IMAGE).file_bytes < plain.file_bytes
    assert make_codec("roi_jpeg", {"fraction": 1.0, "quality": 30}).encode(IMAGE).data == plain.data


def test_mask_covers_the_fraction_in_whole_blocks() -> None:
    codec = ROIJPEG(source="center", fraction=0.25)
    keep = codec.mask(IMAGE)
    expected = np.zeros((64, 64), bool)
    expected[16:48, 16:48] = True  # the four central 16x16 cells
    assert np.array_equal(keep, expected)
    for p in (0.1, 0.5, 0.75):
        keep = ROIJPEG(source="variance", fraction=p, block=8).mask(IMAGE)
        assert p <= keep.mean() < p + 64 / 4096 + 1e-9
        assert (keep.reshape(8, 8, 8, 8).mean((1, 3)) % 1 == 0).all()  # whole 8x8 blocks


def test_saliency_sources() -> None:
    flat = np.full((16, 16, 3), 100, np.uint8)
    assert local_variance(flat).max() == 0
    edge = flat.copy()
    edge[:, 8:] = 200
    v = local_variance(edge)
    assert v[:, 7:9].min() > 0 and v[:, 0].max() == 0
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    g = gradient_saliency(model, IMAGE)
    assert g.shape == (64, 64) and (g >= 0).all() and g.sum() > 0


def test_bitmap_source_with_an_exported_encoder(tmp_path) -> None:
    _, enc, _ = export_tiny(tmp_path)
    codec = make_codec("roi_jpeg", {"source": "bitmap", "checkpoint": str(enc), "fraction": 0.5})
    out = codec.encode(IMAGE)
    assert out.decoded.shape == IMAGE.shape
    assert codec.setting.startswith("src=bitmap:") and "p=0.5" in codec.setting
    torch.set_num_threads(min(2, torch.get_num_threads()))


def test_registered_and_default_sweep_builds() -> None:
    assert "roi_jpeg" in available_codecs()
    for setting in DEFAULT_SWEEPS["roi_jpeg"]:
        assert make_codec("roi_jpeg", setting).setting.startswith("src=variance")


@pytest.mark.parametrize(
    "setting",
    [
        {"source": "nope"},
        {"fraction": 0},
        {"fraction": 1.5},
        {"fraction": "half"},
        {"background": "noise"},
        {"block": 0},
        {"blur": -1.0},
        {"quality": 101},
        {"source": "gradient"},  # needs a checkpoint
        {"source": "bitmap", "checkpoint": "missing.pt"},
        {"source": "variance", "checkpoint": "x.ckpt"},  # uses no model
        {"colour": "red"},  # unknown key
        30,  # a scalar: roi_jpeg needs a mapping
    ],
)
def test_bad_settings_raise_config_error(setting) -> None:
    with pytest.raises(ConfigError):
        make_codec("roi_jpeg", setting)
