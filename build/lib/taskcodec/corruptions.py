"""Common corruptions of the test images, from ImageNet-C's own code (the ``imagecorruptions`` package).

``imagecorruptions`` (Michaelis et al., 2019) packages Hendrycks & Dietterich's ImageNet-C
corruption functions for images of any size. Its parameters are ImageNet-C's, set in pixels for
224-pixel images, so on 64x64 Tiny ImageNet the same severity is a stronger corruption relative
to the object (a defocus disk of radius 6 covers a tenth of the image); that is why the studies
use severities 1-3 of the five.

Every image gets its own seeded random state (``seed``, image index), so a corrupted set is the
same whatever the batch size or order, and two pipelines compared on it see identical pixels.
"""

from __future__ import annotations

import warnings

import numpy as np

from taskcodec.errors import ConfigError

CORRUPTIONS = ("gaussian_noise", "defocus_blur", "contrast", "brightness", "jpeg_compression")
SEVERITIES = (1, 2, 3)


def _corrupt_fn():
    try:
        with warnings.catch_warnings():  # its `import pkg_resources` warns on current setuptools
            warnings.simplefilter("ignore")
            from imagecorruptions import corrupt
    except ImportError as e:
        raise ConfigError(
            f"the corruption studies need the imagecorruptions package ({e}); "
            'install it with pip install -e ".[dev]" (or pip install imagecorruptions "setuptools<81")'
        ) from e
    return corrupt


def corrupt_images(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """``images`` (uint8 [N, H, W, 3]) with one ImageNet-C corruption at ``severity`` (1-5)."""
    if name not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {name!r}; choose one of {list(CORRUPTIONS)}")
    if not isinstance(severity, int | np.integer) or not 1 <= severity <= 5:
        raise ConfigError(f"corruption severity must be an integer 1-5, got {severity!r}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ConfigError(f"corrupt_images needs uint8 [N, H, W, 3] images, got {images.dtype} {images.shape}")
    corrupt = _corrupt_fn()
    out = np.empty_like(images)
    state = np.random.get_state()  # the package draws from numpy's global generator
    try:
        for i, image in enumerate(images):
            np.random.seed([seed, i])
            result = np.asarray(corrupt(image, corruption_name=name, severity=int(severity)))
            out[i] = np.clip(np.rint(result), 0, 255).astype(np.uint8) if result.dtype != np.uint8 else result
    finally:
        np.random.set_state(state)
    return out
