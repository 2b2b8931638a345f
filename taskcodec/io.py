"""The one image decoder of the project: any image Pillow reads -> uint8 RGB (or a float tensor).

Every path into the codec (datamodules, ``taskcodec compress``, ``taskcodec pack``) decodes
through :func:`read_rgb`, so training and deployment see the same pixels:

* modes: grayscale, palette, CMYK, YCbCr, LAB, 16-bit (``I;16*``, ``I``) and float (``F``) images
  become RGB; 16-bit values are scaled to 8 bits (Pillow's own ``convert`` would clip them at 255);
* alpha (``RGBA``, ``LA``, ``PA``, palette transparency) is **dropped**, not composited: this is
  what torchvision's ``ImageFolder`` does, so a classifier trained on ImageFolder-style data sees
  the colours it was trained on;
* EXIF orientation is applied (``ImageOps.exif_transpose``), as a viewer would show the image;
* animated images give their first frame;
* the pixel count is checked against ``max_pixels`` from the header, **before** any pixel is
  decoded, so a small file claiming a huge image cannot exhaust memory.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from PIL import Image, ImageOps

from taskcodec.errors import DataError

T = TypeVar("T")

if TYPE_CHECKING:  # torch is imported where tensors are made: reading images needs only Pillow and numpy
    from torch import Tensor

#: default bound on width * height (4096 x 4096 = 16.8 Mpx: 50 MB as RGB uint8). Decoding applies the
#: same bound to the size a record claims, so anything compressed by default also decodes by default.
DEFAULT_MAX_PIXELS = 4096 * 4096
#: file name endings that directory scans pick up (any Pillow format works when named directly)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".avif")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")

Source = bytes | bytearray | str | os.PathLike


def _open(source: Source) -> Image.Image:
    if isinstance(source, (bytes, bytearray)):
        return Image.open(io.BytesIO(bytes(source)))
    return Image.open(Path(source))


def read_rgb(
    source: Source,
    name: str | None = None,
    size: tuple[int, int] | None = None,
    crop: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    crop_pct: float = 1.0,
) -> np.ndarray:
    """Decode an image (bytes or a path) of any Pillow format and mode to uint8 H x W x 3 RGB.

    Args:
        source: encoded image bytes, or a file path.
        name: what error messages call the image (default: the path, or "image bytes").
        size: (height, width) to resize to; with ``crop`` the shorter side is fitted and the
            centre is cropped, otherwise the image is stretched to ``size``.
        crop: see ``size``.
        crop_pct: with ``crop``, the shorter side is first resized to ``floor(side / crop_pct)`` and the
            centre ``size`` is cut from that (timm's evaluation crop); 1.0 fits the shorter side exactly.
        max_pixels: refuse images with more pixels than this, checked from the header.

    Raises:
        DataError: naming the image when it cannot be read, converted, or is too large.
    """
    if name is None:
        name = "image bytes" if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we check the size ourselves
            with _open(source) as opened:
                width, height = opened.size
                if width * height > max_pixels:
                    raise DataError(
                        f"image {name!r} is {width}x{height} = {width * height} pixels, over the limit of "
                        f"{max_pixels}; downscale it first (or raise max_pixels if you trust the file)"
                    )
                opened.load()
                image = _to_rgb(ImageOps.exif_transpose(opened))
        if size is not None:
            image = _resize(image, size, crop, crop_pct)
        return np.asarray(image, dtype=np.uint8)
    except DataError:
        raise
    except Image.DecompressionBombError as err:  # Pillow's own bound (2x MAX_IMAGE_PIXELS), hit at open
        raise DataError(f"image {name!r} is over the limit of {max_pixels} pixels ({err}); downscale it first") from err
    except FileNotFoundError as err:
        raise DataError(f"image {name!r} does not exist; check the path") from err
    except Exception as err:  # Pillow raises many types on hostile input (OSError, struct.error, ...)
        raise DataError(
            f"cannot read image {name!r}: {type(err).__name__}: {err}. The file is corrupt, truncated or "
            "not an image Pillow can decode; replace it (re-save as PNG or JPEG) or delete it."
        ) from err


def to_tensor(image: np.ndarray) -> Tensor:
    """uint8 H x W x 3 -> float32 [3, H, W] in [0, 1], what the codecs take; a batch [N, H, W, 3] -> [N, 3, H, W]."""
    import torch

    return torch.from_numpy(np.array(image, dtype=np.uint8)).movedim(-1, -3).float().div_(255.0)


def encode_by_size(images: list[np.ndarray], encode: Callable[[np.ndarray], Sequence[T]]) -> list[T]:
    """One result per uint8 H x W x 3 image, in order: images of one size go through ``encode`` as one batch.

    ``encode`` maps a stacked batch [N, H, W, 3] to N results: records, or e.g. a classifier's logits.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for k, image in enumerate(images):
        groups.setdefault(image.shape[:2], []).append(k)
    records: list = [None] * len(images)
    for members in groups.values():
        for k, record in zip(members, encode(np.stack([images[k] for k in members])), strict=True):
            records[k] = record
    return records


def load_image(source: Source, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
    """:func:`read_rgb` then :func:`to_tensor`: float [3, H, W] in [0, 1]."""
    return to_tensor(read_rgb(source, name, max_pixels=max_pixels))


def save_png(image: Tensor, path: str | os.PathLike) -> None:
    """Write float [3, H, W] in [0, 1] as an 8-bit PNG, atomically (``.part`` then rename)."""
    import torch

    array = image.detach().cpu().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, path)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "F":
        # Pillow's own convert("RGB") clips 16-bit values at 255; scale them to 8 bits instead.
        values = np.asarray(image).astype(np.float64)
        if image.mode == "F":
            scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
        else:
            scale = 1.0 if image.mode == "I" and values.size and values.max() <= 255 else 1.0 / 257.0
        gray = np.clip(np.rint(np.nan_to_num(values) * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def _resize(image: Image.Image, size: tuple[int, int], crop: bool, crop_pct: float = 1.0) -> Image.Image:
    height, width = size
    if not crop:
        return image.resize((width, height), Image.Resampling.BICUBIC)
    if not 0.0 < crop_pct <= 1.0:
        raise DataError(f"crop_pct must be in (0, 1], got {crop_pct}; the export's preprocessing record is damaged")
    fit_h, fit_w = (math.floor(height / crop_pct), math.floor(width / crop_pct)) if crop_pct < 1.0 else (height, width)
    w, h = image.size
    scale = max(fit_w / w, fit_h / h)
    new_w, new_h = max(fit_w, round(w * scale)), max(fit_h, round(h * scale))
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return image.crop((left, top, left + width, top + height))


def find_images(paths: list[str | os.PathLike]) -> list[tuple[Path, str]]:
    """Expand files and folders to ``(file, relative name)`` pairs, folders searched recursively.

    Files named directly are taken whatever their ending; folders contribute files ending in
    :data:`IMAGE_EXTENSIONS` (hidden files skipped), sorted. The relative name is the path below the
    folder given (or the file's own name), which outputs mirror.

    Raises:
        DataError: when a path does not exist or nothing was found.
    """
    found: list[tuple[Path, str]] = []
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
            )  # fmt: skip
            found += [(p, p.relative_to(path).as_posix()) for p in files]
        elif path.is_file():
            found.append((path, path.name))
        else:
            raise DataError(f"{path} does not exist; pass image files or folders of images")
    if not found:
        raise DataError(f"no images found in {', '.join(map(str, paths))} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return found
