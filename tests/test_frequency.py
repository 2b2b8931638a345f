"""Frequency sensitivity: exact DCT perturbations, maps on tiny classifiers, tables derived from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from taskcodec.analysis.frequency import (
    STANDARD_CHROMA,
    STANDARD_LUMA,
    block_dct,
    block_idct,
    dct_matrix,
    derive_qtables,
    frequency_sensitivity,
    perturb_coefficient,
    plot_maps,
    random_signs,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)
from taskcodec.baselines import JPEG, JPEGQTable
from taskcodec.errors import ConfigError
from taskcodec.evaluation import code_and_classify

SAMPLE_DIR = Path(__file__).parent / "data" / "tiny-imagenet-sample"


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Four real 64x64 sample images (uint8 [4, 64, 64, 3])."""
    paths = sorted(SAMPLE_DIR.glob("**/*.JPEG"))[:4]
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def tiny_classifier(num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, num_classes)
    ).eval()  # fmt: skip


def test_dct_is_orthonormal_and_blocks_round_trip():
    c = dct_matrix()
    torch.testing.assert_close(c @ c.T, torch.eye(8, dtype=torch.float64))
    x = torch.rand(2, 3, 16, 24, dtype=torch.float64) * 255
    torch.testing.assert_close(block_idct(block_dct(x)), x)
    # the DC coefficient of an orthonormal 8x8 DCT is 8x the block mean
    torch.testing.assert_close(block_dct(x)[..., 0, 0], x.reshape(2, 3, 2, 8, 3, 8).mean((3, 5)) * 8)


def test_ycbcr_round_trip_and_matches_pillow(images):
    rgb = torch.from_numpy(images).permute(0, 3, 1, 2).double()
    ycc = rgb_to_ycbcr(rgb)
    torch.testing.assert_close(ycbcr_to_rgb(ycc), rgb)
    pillow = np.asarray(Image.fromarray(images[0]).convert("YCbCr")).astype(float)
    assert np.abs(ycc[0].permute(1, 2, 0).numpy() - pillow).max() < 1.5  # Pillow: fixed point, truncated


def test_zero_delta_is_identity(images):
    ycc = rgb_to_ycbcr(torch.from_numpy(images).permute(0, 3, 1, 2).double())
    signs = random_signs(len(images), 64, 64, seed=0)
    torch.testing.assert_close(perturb_coefficient(ycc, 0, 3, 5, 0.0, signs), ycc)


@pytest.mark.parametrize("channel", [0, 1, 2])
def test_dc_perturbation_moves_each_block_mean_by_delta_over_8(images, channel):
    ycc = rgb_to_ycbcr(torch.from_numpy(images).permute(0, 3, 1, 2).double())
    signs = random_signs(len(images), 64, 64, seed=1)
    out = perturb_coefficient(ycc, channel, 0, 0, 20.0, signs)
    change = (out - ycc)[:, channel].reshape(len(images), 8, 8, 8, 8)
    expected = (20.0 / 8 * signs)[:, :, None, :, None].expand_as(change)
    torch.testing.assert_close(change, expected)  # every pixel of the block moves by ±delta/8
    others = [c for c in range(3) if c != channel]
    torch.testing.assert_close(out[:, others], ycc[:, others])


def test_only_the_chosen_coefficient_changes(images):
    ycc = rgb_to_ycbcr(torch.from_numpy(images).permute(0, 3, 1, 2).double())
    signs = random_signs(len(images), 64, 64, seed=2)
    diff = block_dct(perturb_coefficient(ycc, 1, 2, 6, 7.0, signs)) - block_dct(ycc)
    expected = torch.zeros_like(diff)
    expected[:, 1, :, :, 2, 6] = 7.0 * signs
    torch.testing.assert_close(diff, expected)


def test_odd_sizes_are_padded_and_cropped():
    ycc = torch.rand(2, 3, 37, 23, dtype=torch.float64) * 255
    signs = random_signs(2, 37, 23, seed=0)
    assert signs.shape == (2, 5, 3)
    out = perturb_coefficient(ycc, 0, 1, 1, 10.0, signs)
    assert out.shape == ycc.shape
    torch.testing.assert_close(perturb_coefficient(ycc, 0, 1, 1, 0.0, signs), ycc)
    assert not torch.allclose(out, ycc)


def test_sensitivity_of_a_tiny_classifier(images, tmp_path):
    clf = tiny_classifier()
    labels = np.array([0, 1, 2, 0])
    res = frequency_sensitivity(clf, images[:, :24, :24], labels, delta=64.0, seed=0, batch_size=3)
    assert res["n_images"] == 4 and res["delta"] == 64.0
    maps = {k: np.asarray(v) for k, v in res["maps"].items()}
    assert all(m.shape == (3, 8, 8) and np.isfinite(m).all() for m in maps.values())
    assert (maps["mean_l1"] > 0).all() and (maps["mean_kl"] >= -1e-12).all()
    assert ((maps["flip_rate"] >= 0) & (maps["flip_rate"] <= 1)).all()
    json.dumps(res)  # JSON as is
    zero = frequency_sensitivity(clf, images[:, :24, :24], labels, delta=0.0)
    assert np.abs(np.asarray(zero["maps"]["mean_l1"])).max() < 1e-6
    assert Path(plot_maps(res, "mean_l1", str(tmp_path / "m.png"))).stat().st_size > 0


def test_sensitivity_of_the_real_coded_pipeline(images):
    from tiny_codec import tiny_codec

    codec = tiny_codec("split")
    fn = lambda x: code_and_classify(codec, codec, x)["logits"]  # noqa: E731
    res = frequency_sensitivity(fn, images[:1, :16, :16], np.array([0]), delta=128.0)
    assert np.asarray(res["maps"]["mean_l1"]).shape == (3, 8, 8)


def test_bad_images_raise():
    with pytest.raises(ConfigError):
        frequency_sensitivity(tiny_classifier(), np.zeros((2, 8, 8, 3), np.float32), np.zeros(2))


def fake_result(luma: np.ndarray, chroma: np.ndarray) -> dict:
    return {"delta": 1.0, "maps": {"mean_l1": np.stack([luma, chroma, chroma]).tolist()}}


def test_derived_tables_are_fine_where_sensitive():
    i, j = np.mgrid[0:8, 0:8]
    sens = 1.0 / (1 + i + j)  # low frequencies matter most
    tables = derive_qtables(fake_result(sens, sens * 2), gamma=1.0)
    luma, chroma = np.reshape(tables["luma"], (8, 8)), np.reshape(tables["chroma"], (8, 8))
    assert luma[0, 0] < luma[3, 3] < luma[7, 7] and chroma[0, 0] < chroma[7, 7]
    assert all(1 <= v <= 255 for v in tables["luma"] + tables["chroma"])
    gm = lambda t: np.exp(np.log(t).mean())  # noqa: E731
    assert gm(luma) == pytest.approx(gm(STANDARD_LUMA), rel=0.05)
    assert gm(chroma) == pytest.approx(gm(STANDARD_CHROMA), rel=0.05)
    flat = derive_qtables(fake_result(np.ones((8, 8)), np.ones((8, 8))))
    assert len(set(flat["luma"])) == 1
    # usable by the codec as they are
    JPEGQTable(50, {"luma": tables["luma"], "chroma": tables["chroma"]}).encode(np.zeros((8, 8, 3), np.uint8))


def test_derive_rejects_bad_arguments():
    res = fake_result(np.ones((8, 8)), np.ones((8, 8)))
    with pytest.raises(ConfigError):
        derive_qtables(res, metric="psnr")
    with pytest.raises(ConfigError):
        derive_qtables(res, gamma=0)


def test_standard_tables_reproduce_libjpeg(images):
    """The standard tables through jpeg_qtable give libjpeg's own JPEG, byte for byte."""
    std = {"luma": STANDARD_LUMA, "chroma": STANDARD_CHROMA}
    for q in (10, 50, 90):
        assert (
            JPEGQTable(q, std).encode(images[0]).data == JPEG(q, subsampling="4:4:4").encode(images[0]).data
        )
