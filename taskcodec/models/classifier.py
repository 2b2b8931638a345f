"""The timm classifier wrapper and checkpoint reading shared by every codec family."""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import Tensor, nn

from taskcodec.errors import CheckpointError, ConfigError
from taskcodec.preprocessing import IMAGENET_MEAN, IMAGENET_STD


class Normalize(nn.Module):
    """RGB in [0, 1] -> ImageNet-normalised input, so callers never normalise."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def create_timm(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with a :class:`ConfigError` for unknown names or bad arguments."""
    try:
        return timm.create_model(name, **kwargs)
    except (RuntimeError, TypeError) as e:  # timm raises RuntimeError for unknown names
        raise ConfigError(f"cannot build timm classifier {name!r}: {e}") from e


class ImageClassifier(nn.Module):
    """A timm classifier that takes RGB in [0, 1] and normalises inside."""

    def __init__(
        self,
        name: str = "resnet18",
        num_classes: int = 10,
        pretrained: bool = False,
        weights: str | None = None,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        kwargs: dict[str, Any] = {"num_classes": num_classes, "drop_rate": drop_rate}
        if weights:  # a local file: timm loads it and re-heads it if num_classes differs
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": weights})
        else:
            kwargs["pretrained"] = pretrained
        self.model = create_timm(name, **kwargs)
        self.normalize = Normalize()

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.normalize(x))


def strip_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of a state dict under ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def read_checkpoint(path: str) -> Any:
    """``torch.load`` with ``weights_only=True``, turning every failure into a :class:`CheckpointError`.

    ``weights_only`` is what keeps a hostile pickle from running code on load.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint {path} does not exist; check the path") from e
    except IsADirectoryError as e:
        raise CheckpointError(f"{path} is a directory, not a checkpoint file") from e
    except Exception as e:  # unpickling errors, truncated zip archives, wrong file types
        raise CheckpointError(f"cannot read checkpoint {path}: {e}; is it a complete torch checkpoint?") from e


def reference_weights(path: str) -> tuple[str, int, dict[str, Tensor]]:
    """(timm name, num_classes, timm state dict) of a reference classifier checkpoint."""
    ckpt = read_checkpoint(path)
    hp = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    if "classifier" not in hp or "num_classes" not in hp or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a reference classifier checkpoint (train.py experiment=reference)")
    # a run with an EMA of its weights validated and tested the EMA: that is the reference
    prefix = "ema.module.model." if float(hp.get("ema_decay") or 0) > 0 else "classifier.model."
    weights = strip_prefix(ckpt["state_dict"], prefix)
    if not weights:
        raise CheckpointError(f"{path} has no '{prefix}*' weights; pass a train.py experiment=reference checkpoint")
    return hp["classifier"], int(hp["num_classes"]), weights


def check_reference_fits(path: str, name: str, num_classes: int) -> dict[str, Tensor]:
    """The reference's timm weights, after checking it is the same classifier with the same classes."""
    ref_name, ref_classes, weights = reference_weights(path)
    if ref_classes != num_classes:
        raise CheckpointError(
            f"{path}: the reference has {ref_classes} classes but the codec {num_classes}; "
            "use the same num_classes as the reference run"
        )
    if ref_name != name:
        raise CheckpointError(f"{path} is a {ref_name!r} reference but the codec uses {name!r}; use the same classifier")
    return weights


def load_image_classifier(path: str) -> ImageClassifier:
    """The reference classifier from a ``ClassifierModule`` checkpoint, without Lightning.

    The model carries ``content_id`` (:func:`reference_id` of the same weights), so a caller that
    needs both reads the checkpoint once.
    """
    name, num_classes, weights = reference_weights(path)
    model = ImageClassifier(name, num_classes)
    try:
        model.model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit {name!r}: {e}") from e
    model.content_id = _content_id(name, num_classes, weights)
    return model.eval()


def reference_id(path: str) -> str:
    """A content id of a reference classifier: 16 hex digits of SHA-256 over its timm name, classes and weights.

    Tables name their reference by it, so rows measured against another classifier (or another
    epoch of the same run) are never joined into one table.
    """
    return _content_id(*reference_weights(path))


def _content_id(name: str, num_classes: int, weights: dict) -> str:
    import hashlib

    h = hashlib.sha256(f"{name}|{num_classes}".encode())
    for k in sorted(weights):
        t = weights[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]
