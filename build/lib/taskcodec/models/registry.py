"""Codec families by name, in the manner of timm's ``register_model`` and CompressAI's model dicts.

A family is one module that defines a :class:`~taskcodec.models.base.TaskCodecBase` subclass and
decorates it with ``@register_codec("name")``. Export, the CLI, evaluation and the Lightning
system only ever call :func:`create_codec`, so a new family needs no edits anywhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from taskcodec.errors import ConfigError

_CODECS: dict[str, type] = {}


def register_codec(name: str) -> Callable[[type], type]:
    """Class decorator: make a codec family available to :func:`create_codec` as ``name``."""

    def wrap(cls: type) -> type:
        if name in _CODECS and _CODECS[name] is not cls:
            raise ConfigError(f"codec family {name!r} is registered twice")
        cls.family = name
        _CODECS[name] = cls
        return cls

    return wrap


def list_codecs() -> list[str]:
    """The registered family names, sorted."""
    return sorted(_CODECS)


def create_codec(name: str, **config: Any):
    """Build the codec family ``name`` from its keyword config (what exports and checkpoints store)."""
    if name not in _CODECS:
        raise ConfigError(f"unknown codec family {name!r}; registered: {', '.join(list_codecs())}")
    return _CODECS[name](**config)
