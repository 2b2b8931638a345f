"""The corruption pipeline: ImageNet-C's functions, seeded per image, shapes and errors."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_codec import SAMPLE

from taskcodec.corruptions import CORRUPTIONS, corrupt_images
from taskcodec.errors import ConfigError
from taskcodec.io import read_rgb


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    files = sorted((SAMPLE / "val" / "images").glob("*.JPEG"))[:4]
    return np.stack([read_rgb(f) for f in files])


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_corruption_changes_images_and_keeps_their_shape(images, name) -> None:
    out = corrupt_images(images, name, 2)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert not np.array_equal(out, images)


def test_seeded_per_image_so_order_and_batch_do_not_matter(images) -> None:
    whole = corrupt_images(images, "gaussian_noise", 3, seed=7)
    assert np.array_equal(whole, corrupt_images(images, "gaussian_noise", 3, seed=7))
    assert not np.array_equal(whole, corrupt_images(images, "gaussian_noise", 3, seed=8))
    state = np.random.get_state()[1].copy()
    corrupt_images(images[:1], "gaussian_noise", 3, seed=7)
    assert np.array_equal(np.random.get_state()[1], state)  # the global generator is left as found


def test_severity_grows(images) -> None:
    x = images.astype(float)
    noise = [np.abs(corrupt_images(images, "gaussian_noise", s).astype(float) - x).mean() for s in (1, 2, 3)]
    spread = [corrupt_images(images, "contrast", s).astype(float).std() for s in (1, 2, 3)]
    assert noise[0] < noise[1] < noise[2] and spread[0] > spread[1] > spread[2]


def test_bad_arguments(images) -> None:
    with pytest.raises(ConfigError, match="unknown corruption"):
        corrupt_images(images, "fog_of_war", 1)
    with pytest.raises(ConfigError, match="severity"):
        corrupt_images(images, "contrast", 6)
    with pytest.raises(ConfigError, match="uint8"):
        corrupt_images(images.astype(np.float32), "contrast", 1)
