"""Codec families and their registry.

``create_codec("split", classifier="resnet18", split="layer3", M=32)`` builds a family by name;
each family is one module here that registers itself with ``@register_codec``.
"""

from taskcodec.models import hyperprior, light, split  # noqa: F401  (importing registers the families)
from taskcodec.models.base import TaskCodecBase
from taskcodec.models.classifier import (
    ImageClassifier,
    load_image_classifier,
    read_checkpoint,
    strip_prefix,
)
from taskcodec.models.registry import create_codec, list_codecs, register_codec

__all__ = [
    "ImageClassifier",
    "TaskCodecBase",
    "create_codec",
    "list_codecs",
    "load_image_classifier",
    "read_checkpoint",
    "register_codec",
    "strip_prefix",
]
