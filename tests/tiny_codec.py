"""Tiny exported codecs for the CLI, container and pack tests (random weights, seconds to build)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from taskcodec.export import export_codec
from taskcodec.models import create_codec

SAMPLE = Path(__file__).resolve().parent / "data" / "tiny-imagenet-sample"
CLASS_NAMES = ["n01443537", "n01641577", "n01698640"]
CLASS_WORDS = ["goldfish", "bullfrog", "American alligator"]


def tiny_codec(family: str = "split", **kwargs) -> nn.Module:
    """A seeded random codec whose latents are spread wide enough that images get different records."""
    torch.manual_seed(0)
    codec = create_codec(family, M=8, N=16, num_classes=3, **kwargs).eval()
    last = [m for m in codec.g_a.modules() if isinstance(m, nn.Conv2d)][-1]
    with torch.no_grad():  # random weights give |y| < 0.5, which all rounds to one symbol
        last.weight.mul_(30.0)
        if last.bias is not None:
            last.bias.mul_(30.0)
    codec.update(force=True)
    return codec


def export_tiny(out: Path, family: str = "split", **kwargs) -> tuple[nn.Module, Path, Path]:
    """(codec, encoder file, decoder file) of a tiny codec with Tiny ImageNet class names."""
    codec = tiny_codec(family, **kwargs)
    enc, dec = export_codec(codec, out, {"lmbda": 1.0, "class_names": CLASS_NAMES, "class_words": CLASS_WORDS})
    return codec, enc, dec
