"""The codec: a CompressAI scale hyperprior (Ballé et al. 2018) whose only job is to keep a classifier right.

Two task heads share the same entropy-coded latent ``y_hat``:

* ``pixel``: ``g_s`` synthesises a 3-channel image and a timm classifier (possibly the frozen
  reference model) classifies it, so an existing server model is kept unchanged.
* ``latent``: a timm classifier with ``in_chans=M`` classifies ``y_hat`` directly; its stem is
  adapted to the latent's resolution, and the server never decodes pixels.

Inputs are RGB in [0, 1]; normalisation for the classifier happens in :class:`ImageClassifier`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import timm
import torch
import torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.layers import GDN
from compressai.models.base import CompressionModel
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from taskcodec.bitstream import pack_batch, unpack_batch
from taskcodec.errors import CheckpointError, ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEADS = ("pixel", "latent")


class ImageClassifier(nn.Module):
    """A timm classifier that takes RGB in [0, 1] and normalises inside, so callers never have to."""

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
        try:
            self.model = timm.create_model(name, **kwargs)
        except RuntimeError as e:  # timm's message for unknown names is a RuntimeError
            raise ConfigError(f"cannot build timm classifier {name!r}: {e}") from e
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x - self.mean) / self.std)


def build_latent_classifier(name: str, num_classes: int, in_chans: int, latent_stride: int) -> nn.Module:
    """A timm classifier on ``y_hat`` whose stem only downsamples what the codec has not already.

    ResNet-style stems (``conv1`` + ``maxpool``) downsample by 4; on a latent that is already
    ``latent_stride`` times smaller, keeping them would leave 1x1 maps after two stages.
    """
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    except RuntimeError as e:
        raise ConfigError(f"cannot build timm classifier {name!r}: {e}") from e
    if not (hasattr(model, "conv1") and hasattr(model, "maxpool") and isinstance(model.conv1, nn.Conv2d)):
        raise ConfigError(
            f"latent head: stem adaptation supports ResNet-style timm models (conv1 + maxpool), "
            f"not {name!r}; use e.g. resnet18/resnet34/resnet50 or head=pixel"
        )
    if latent_stride >= 2:
        out = model.conv1.out_channels
        model.conv1 = nn.Conv2d(in_chans, out, kernel_size=3, stride=1, padding=1, bias=False)
        if latent_stride >= 4:
            model.maxpool = nn.Identity()
    return model


@dataclass
class CodecConfig:
    """Everything needed to rebuild a :class:`TaskCodec` (stored in checkpoints and exports)."""

    N: int = 64
    M: int = 96
    num_stages: int = 2
    head: str = "latent"
    classifier: str = "resnet18"
    num_classes: int = 10
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ConfigError(f"model.head must be one of {HEADS}, got {self.head!r}")
        for key in ("N", "M", "num_stages", "num_classes"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"model.{key} must be >= 1, got {getattr(self, key)!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def stride(self) -> int:
        """Input sizes are padded to a multiple of this: g_a's stages plus h_a's two."""
        return 2 ** (self.num_stages + 2)


def _analysis(cin: int, N: int, M: int, stages: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(stages):
        last = i == stages - 1
        layers.append(conv(cin if i == 0 else N, M if last else N))
        if not last:
            layers.append(GDN(N))
    return nn.Sequential(*layers)


def _synthesis(M: int, N: int, cout: int, stages: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(stages):
        last = i == stages - 1
        layers.append(deconv(M if i == 0 else N, cout if last else N))
        if not last:
            layers.append(GDN(N, inverse=True))
    return nn.Sequential(*layers)


def resize_buffers_like(module: nn.Module, state_dict: dict[str, Tensor], prefix: str = "") -> None:
    """Resize ``module``'s buffers to the shapes in ``state_dict``.

    CompressAI's CDF tables change size when ``update()`` runs, so a checkpoint saved after an
    update no longer fits a freshly built model (and vice versa); torch cannot load that by itself.
    """
    for name, buf in module.named_buffers():
        saved = state_dict.get(prefix + name)
        if saved is not None and buf is not None and buf.shape != saved.shape:
            buf.resize_(saved.shape)


class TaskCodec(CompressionModel):
    """Scale-hyperprior codec plus a classifier head; ``compress``/``decompress`` make real bytes.

    ``with_encoder``/``with_decoder`` build only one side, which is how exported encoder and
    decoder files are loaded: the client never holds the classifier, the server never holds ``g_a``.
    """

    def __init__(self, config: CodecConfig, with_encoder: bool = True, with_decoder: bool = True) -> None:
        super().__init__()
        self.config = config
        N, M, S = config.N, config.M, config.num_stages
        if with_encoder:
            self.g_a = _analysis(3, N, M, S)
            self.h_a = nn.Sequential(
                conv(M, N, 3, 1), nn.ReLU(inplace=True), conv(N, N), nn.ReLU(inplace=True), conv(N, N)
            )
        self.h_s = nn.Sequential(
            deconv(N, N), nn.ReLU(inplace=True), deconv(N, N), nn.ReLU(inplace=True),
            conv(N, M, 3, 1), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)
        self.classifier: nn.Module | None = None
        if with_decoder:
            if config.head == "pixel":
                self.g_s = _synthesis(M, N, 3, S)
                self.classifier = ImageClassifier(config.classifier, config.num_classes)
            else:
                self.classifier = build_latent_classifier(
                    config.classifier, config.num_classes, M, 2**S
                )

    # -- helpers ---------------------------------------------------------------------------
    def _pad(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ConfigError(f"expected a batch of RGB images [B, 3, H, W], got shape {tuple(x.shape)}")
        s = self.config.stride
        h, w = x.shape[-2:]
        ph, pw = (-h) % s, (-w) % s
        return F.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x

    def _head(self, y_hat: Tensor, image_size: tuple[int, int]) -> dict[str, Tensor]:
        if self.classifier is None:
            raise ConfigError("this TaskCodec was built without its decoder side (with_decoder=False)")
        if self.config.head == "pixel":
            h, w = image_size
            x_hat = self.g_s(y_hat)[..., :h, :w].clamp(0, 1)
            return {"x_hat": x_hat, "logits": self.classifier(x_hat)}
        return {"logits": self.classifier(y_hat)}

    # -- training / evaluation pass --------------------------------------------------------
    def code_latents(self, x: Tensor) -> dict[str, Any]:
        """The entropy-coded part of the forward pass: ``y_hat``, likelihoods, rate in bits per image.

        In training, likelihoods use CompressAI's additive noise and ``y_hat`` is ``y`` rounded
        with a straight-through gradient; in eval both use real rounding, so ``y_hat`` equals what
        :meth:`decompress` rebuilds from the bytes.
        """
        y = self.g_a(self._pad(x))
        z = self.h_a(torch.abs(y))
        with torch.autocast(device_type=x.device.type, enabled=False):  # entropy models stay fp32
            y, z = y.float(), z.float()
            z_hat, z_lik = self.entropy_bottleneck(z)
            scales_hat = self.h_s(z_hat)
            y_noisy, y_lik = self.gaussian_conditional(y, scales_hat)
        y_hat = y + (torch.round(y) - y).detach() if self.training else y_noisy
        bits = -(torch.log2(y_lik).flatten(1).sum(1) + torch.log2(z_lik).flatten(1).sum(1))
        return {"likelihoods": {"y": y_lik, "z": z_lik}, "rate_bits": bits, "y_hat": y_hat}

    def forward(self, x: Tensor) -> dict[str, Any]:
        """Logits (and ``x_hat`` for the pixel head) on top of :meth:`code_latents`."""
        out = self.code_latents(x)
        out.update(self._head(out["y_hat"], x.shape[-2:]))
        return out

    # -- real coding ------------------------------------------------------------------------
    def compress(self, x: Tensor) -> dict[str, Any]:
        """Encode a batch: per-image byte strings for y and z, plus the shapes needed to decode.

        Call ``update(force=True)`` first. Coding runs on CPU so that the hyper-synthesis and the
        entropy coder see identical numbers on every machine.
        """
        self._require_cpu()
        size = tuple(x.shape[-2:])
        y = self.g_a(self._pad(x))
        z = self.h_a(torch.abs(y))
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        indexes = self.gaussian_conditional.build_indexes(self.h_s(z_hat))
        y_strings = self.gaussian_conditional.compress(y, indexes)
        return {"strings": [y_strings, z_strings], "shape": tuple(z.size()[-2:]), "image_size": size}

    def decompress(self, strings: list[list[bytes]], shape: tuple[int, int], image_size: tuple[int, int]) -> dict:
        """Rebuild ``y_hat`` (and ``x_hat`` for the pixel head) and the logits from the bytes."""
        self._require_cpu()
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        indexes = self.gaussian_conditional.build_indexes(self.h_s(z_hat))
        y_hat = self.gaussian_conditional.decompress(strings[0], indexes, z_hat.dtype)
        out = {"y_hat": y_hat}
        if self.classifier is not None:
            out.update(self._head(y_hat, image_size))
        return out

    def encode(self, x: Tensor) -> list[bytes]:
        """Compress a batch to one self-contained byte string per image (see :mod:`taskcodec.bitstream`)."""
        return pack_batch(self.compress(x))

    def decode(self, streams: list[bytes]) -> dict:
        """Decode byte strings of same-size images back to ``y_hat`` and logits."""
        strings, (h, w) = unpack_batch(streams)
        s = self.config.stride
        return self.decompress(strings, (-(-h // s), -(-w // s)), (h, w))

    def _require_cpu(self) -> None:
        if any(p.device.type != "cpu" for p in self.h_s.parameters()):
            raise ConfigError("compress/decompress run on CPU for deterministic decoding: call .cpu() first")

    def load_state_dict(self, state_dict: dict[str, Tensor], strict: bool = True):
        resize_buffers_like(self, state_dict)
        return nn.Module.load_state_dict(self, state_dict, strict=strict)

    def main_and_aux_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Split parameters: the quantiles get CompressAI's auxiliary loss and their own optimiser."""
        main, aux = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (aux if name.endswith(".quantiles") else main).append(p)
        return main, aux


def strip_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of a state dict under ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def read_checkpoint(path: str) -> dict:
    """``torch.load`` with ``weights_only=True``, turning every failure into a :class:`CheckpointError`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint {path} does not exist; check the path") from e
    except Exception as e:  # unpickling errors, truncated zip archives, wrong file types
        raise CheckpointError(f"cannot read checkpoint {path}: {e}; is it a complete torch checkpoint?") from e


def load_reference_classifier(codec: TaskCodec, path: str) -> list[str]:
    """Start the codec's classifier from a reference classifier checkpoint (Lightning or plain).

    The pixel head takes every weight. The latent head takes all but the tensors whose shapes
    differ (the stem, which now reads ``M`` latent channels); their names are returned.
    """
    ckpt = read_checkpoint(path)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no state_dict; expected a reference classifier checkpoint")
    prefix = "classifier.model."
    weights = strip_prefix(state, prefix)
    if not weights:
        raise CheckpointError(
            f"{path} has no '{prefix}*' weights; pass a checkpoint made by train.py experiment=reference"
        )
    target = codec.classifier.model if codec.config.head == "pixel" else codec.classifier
    own = target.state_dict()
    skipped = [k for k, v in weights.items() if k not in own or own[k].shape != v.shape]
    missing = [k for k in own if k not in weights]
    if codec.config.head == "pixel" and (skipped or missing):
        raise CheckpointError(
            f"{path} does not fit classifier {codec.config.classifier!r} with "
            f"{codec.config.num_classes} classes (mismatched: {(skipped + missing)[:4]}); "
            "use the same classifier name and num_classes as the reference run"
        )
    target.load_state_dict({k: v for k, v in weights.items() if k not in skipped}, strict=False)
    if any(k.startswith(("fc.", "head", "classifier")) for k in skipped):
        raise CheckpointError(
            f"{path}: the reference's classification layer does not fit {codec.config.num_classes} classes; "
            "use the same num_classes as the reference run"
        )
    return skipped


def load_image_classifier(path: str) -> ImageClassifier:
    """The reference classifier from a ``ClassifierModule`` checkpoint, without Lightning."""
    ckpt = read_checkpoint(path)
    hp = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    if "classifier" not in hp or "num_classes" not in hp or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a reference classifier checkpoint (train.py experiment=reference)")
    model = ImageClassifier(hp["classifier"], hp["num_classes"])
    state = strip_prefix(ckpt["state_dict"], "classifier.")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit {hp['classifier']!r}: {e}") from e
    return model.eval()
