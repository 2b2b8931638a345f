"""What an exported model expects as input, carried in the export as timm's ``pretrained_cfg`` is.

A model trained on 64x64 Tiny ImageNet crops classifies a 640x480 photo badly at its native size:
it never saw objects that large. So every export records the input it was trained on, and
``taskcodec compress`` turns any image into it by default: scale the shorter side to the input
size (bicubic), crop the centre, RGB in [0, 1]; the ImageNet normalisation happens inside the
model (it is listed so a reader of the export knows). ``--native-size`` keeps an image as it is.
"""

from __future__ import annotations

from typing import Any

from taskcodec.bitstream import MAX_LATENT_SYMBOLS
from taskcodec.errors import ConfigError, DataError

#: the normalisation every classifier wrapper applies inside the model (timm's ImageNet defaults)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocessing_config(height: int, width: int, crop_pct: float = 1.0) -> dict[str, Any]:
    """The preprocessing record of a model trained on ``height`` x ``width`` images (timm's keys where they exist).

    ``crop_pct`` < 1 is timm's evaluation crop: the shorter side goes to ``floor(size / crop_pct)``
    and the centre ``size`` is kept, as the datamodule prepared the test images.
    """
    if height < 1 or width < 1:
        raise ConfigError(f"input size must be positive, got {height}x{width}")
    if not 0.0 < crop_pct <= 1.0:
        raise ConfigError(f"crop_pct must be in (0, 1], got {crop_pct}")
    return {
        "input_size": [3, int(height), int(width)],
        "resize": ("shorter side to the input size" if crop_pct == 1.0
                   else f"shorter side to floor(input size / {crop_pct:g})"),  # fmt: skip
        "interpolation": "bicubic",
        "crop_mode": "center",
        "crop_pct": float(crop_pct),
        "color": "RGB",
        "value_range": [0.0, 1.0],
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "normalized_inside_model": True,
    }


def input_size(meta: dict) -> tuple[int, int] | None:
    """(height, width) an export expects, or ``None`` for exports made before they recorded it."""
    pre = meta.get("preprocessing")
    if not pre:
        return None
    _, h, w = pre["input_size"]
    return int(h), int(w)


def crop_fraction(meta: dict) -> float:
    """The export's ``crop_pct`` (1.0 for exports made before it was recorded)."""
    pre = meta.get("preprocessing") or {}
    return float(pre.get("crop_pct", 1.0))


def describe_preprocessing(meta: dict) -> str:
    pre = meta.get("preprocessing")
    if not pre:
        return "preprocessing: not recorded (an older export): images are coded at their native size"
    _, h, w = pre["input_size"]
    return (f"preprocessing: {pre['color']} in [0, 1], {pre['resize']} ({pre['interpolation']}), "
            f"{pre['crop_mode']} crop to {h}x{w}; normalisation mean={pre['mean']} std={pre['std']} "
            f"{'inside the model' if pre.get('normalized_inside_model') else 'by the caller'}")  # fmt: skip


def padded_latent_shape(channels: int, stride: int, analysis_stride: int, height: int, width: int) -> tuple[int, int, int]:
    """(channels, height, width) of an image's latent: the image is replicate-padded to a multiple of
    ``stride``, then the analysis divides it by ``analysis_stride`` (the PyTorch and ONNX clients alike)."""
    return channels, -(-height // stride) * stride // analysis_stride, -(-width // stride) * stride // analysis_stride


def check_native_size(codec, height: int, width: int, name: str) -> None:
    """Refuse native-size images the model cannot take: smaller than one latent cell, or with a latent the decoder refuses.

    ``codec`` is anything with ``stride`` and ``latent_shape``: a PyTorch codec or the torch-free ONNX client.
    """
    stride = codec.stride
    if height < stride or width < stride:
        raise DataError(
            f"image {name!r} is {width}x{height}, smaller than one latent cell of this model ({stride}x{stride} "
            "pixels), so it cannot take it at native size: drop --native-size to resize it to the model's input"
        )
    c, h, w = codec.latent_shape(height, width)
    if c * h * w > MAX_LATENT_SYMBOLS:
        raise DataError(
            f"image {name!r} is {width}x{height}: its latent ({c}x{h}x{w}) is over the decoder's limit of "
            f"{MAX_LATENT_SYMBOLS} symbols, so no server could decode it: drop --native-size to resize it"
        )
