"""What every codec family shares: padding, the training pass, real coding, sides and parameters.

A family subclasses :class:`TaskCodecBase` and provides

* ``analysis(x)``: padded RGB in [0, 1] -> latent ``y`` (the client's network),
* ``self.entropy``: an :class:`~taskcodec.models.entropy.EntropyStage`,
* ``synthesis(y_hat, image_size)``: ``{"logits": ...}`` (and ``"x_hat"`` if it makes pixels),
* ``analysis_stride`` and ``latent_channels``, ``encoder_parts``/``decoder_parts`` (the
  submodules each side holds: export writes exactly these), and ``init_from_reference``.

Everything else (``forward``, ``compress``/``decompress``, ``encode``/``decode`` to per-image
records, side pruning, CompressAI's buffer-resizing ``load_state_dict``) lives here once.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from compressai.models.base import CompressionModel
from torch import Tensor, nn

from taskcodec.bitstream import check_decodable, pack_record, payloads_by_size
from taskcodec.errors import BitstreamError, ConfigError
from taskcodec.io import DEFAULT_MAX_PIXELS
from taskcodec.models.entropy import EntropyStage
from taskcodec.preprocessing import padded_latent_shape
from taskcodec.range_coder import BatchDecoder, BatchEncoder

#: decoding refuses records whose image would exceed this many pixels (the same cap as reading an
#: image), as it refuses latents over :data:`taskcodec.bitstream.MAX_LATENT_SYMBOLS`
MAX_DECODE_PIXELS = DEFAULT_MAX_PIXELS


class TaskCodecBase(CompressionModel):
    """Base class of the codec families; see the module docstring for what a family provides."""

    family: str = ""
    encoder_parts: tuple[str, ...] = ()
    decoder_parts: tuple[str, ...] = ()
    has_pixels: bool = False
    entropy: EntropyStage
    analysis_stride: int = 1
    latent_channels: int = 1

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)  # plain values: what create_codec(family, **config) rebuilds
        self.side = "both"

    # -- what a family implements ---------------------------------------------------------------
    def analysis(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def synthesis(self, y_hat: Tensor, image_size: tuple[int, int]) -> dict[str, Tensor]:
        raise NotImplementedError

    def init_from_reference(self, path: str) -> list[str]:
        """Start every part the reference classifier has from its weights; returns skipped names."""
        raise NotImplementedError

    def classifier_head_prefixes(self) -> list[str]:
        """State-dict prefixes of the final class layer, re-initialised when a server learns new classes.

        Families that return none still get a new head wherever the class count changes its shape.
        """
        return []

    def reference_modules(self, side: str = "both") -> list[nn.Module]:
        """The modules that come from the reference classifier (own learning rate, optional freezing).

        ``side="encoder"`` gives only those the client runs (for the split family: the stages up to
        the split), ``"decoder"`` only the server's.
        """
        return []

    def reference_parameters(self, side: str = "both") -> list[nn.Parameter]:
        return [p for m in self.reference_modules(side) for p in m.parameters()]

    # -- shared ---------------------------------------------------------------------------------
    @property
    def stride(self) -> int:
        """Inputs are replicate-padded to a multiple of this."""
        return self.analysis_stride * self.entropy.stride

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        return padded_latent_shape(self.latent_channels, self.stride, self.analysis_stride, height, width)

    def _pad(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ConfigError(f"expected a batch of RGB images [B, 3, H, W], got {shape}")
        if x.shape[0] == 0:
            raise ConfigError("empty batch: nothing to code")
        if not x.is_floating_point():
            raise ConfigError(f"expected float images in [0, 1], got dtype {x.dtype}; divide uint8 images by 255")
        if not torch.isfinite(x).all():
            raise ConfigError("images contain NaN or inf; clean the input first")
        if x.min() < 0 or x.max() > 1:
            raise ConfigError(f"images must be in [0, 1], got values in [{x.min():.3g}, {x.max():.3g}]")
        s = self.stride
        h, w = x.shape[-2:]
        ph, pw = (-h) % s, (-w) % s
        return F.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x

    def _require(self, side: str) -> None:
        if self.side not in ("both", side):
            raise ConfigError(f"this {self.family} codec was loaded as the {self.side}; it has no {side} side")

    def forward(self, x: Tensor) -> dict[str, Any]:
        """Training/validation pass: logits, likelihoods, ``y_hat`` and ``rate_bits`` per image."""
        self._require("both")
        y = self.analysis(self._pad(x))
        y_hat, likelihoods = self.entropy(y)
        bits = sum(-torch.log2(lik).flatten(1).sum(1) for lik in likelihoods.values())
        out = {"likelihoods": likelihoods, "rate_bits": bits, "y_hat": y_hat}
        out.update(self.synthesis(y_hat, tuple(x.shape[-2:])))
        return out

    # -- real coding ----------------------------------------------------------------------------
    @torch.no_grad()
    def compress(self, x: Tensor, estimate: bool = True) -> dict[str, Any]:
        """One range-coded payload per image, plus the entropy model's estimate (same ``g_a`` pass).

        Call ``update(force=True)`` first. Coding runs on CPU so that both ends compute the same
        numbers on every machine. ``estimate=False`` skips the likelihoods (a client only sends).
        """
        self._require("encoder")
        self._require_cpu()
        if self.training:
            raise ConfigError("call .eval() before compress: coding uses real rounding, not training noise")
        y = self.analysis(self._pad(x))
        est = None
        if estimate:
            _, likelihoods = self.entropy(y)
            est = sum(-torch.log2(lik).flatten(1).sum(1) for lik in likelihoods.values())
        encoders = BatchEncoder(len(y))
        self.entropy.write(y, encoders)
        return {"payloads": encoders.flush(), "est_bits": est, "image_size": tuple(x.shape[-2:])}

    @torch.no_grad()
    def decode_latents(self, payloads: list[bytes], image_size: tuple[int, int]) -> Tensor:
        """``y_hat`` of same-size images from their payloads: the entropy stage alone.

        This is what the server side trains on, exactly as :meth:`decompress` rebuilds it. The
        claimed size is bounded before any tensor is made, and bytes left after the coded data
        are an error (appended garbage, or a record made by another model).
        """
        self._require("decoder")
        self._require_cpu()
        shape = self.latent_shape(*image_size)
        check_decodable(image_size, shape, MAX_DECODE_PIXELS)
        decoders = BatchDecoder(payloads)
        y_hat = self.entropy.read(decoders, shape)
        for read, p in zip(decoders.bytes_read, payloads, strict=True):
            if read < len(p):
                raise BitstreamError(
                    f"corrupt record: {len(p) - read} bytes after the coded data; "
                    "garbage was appended or the record was made by another model"
                )
        return y_hat

    @torch.no_grad()
    def decompress(self, payloads: list[bytes], image_size: tuple[int, int]) -> dict[str, Tensor]:
        """Rebuild ``y_hat`` from the payloads of same-size images, then classify it."""
        y_hat = self.decode_latents(payloads, image_size)
        return {"y_hat": y_hat, **self.synthesis(y_hat, image_size)}

    def encode(self, x: Tensor) -> list[bytes]:
        """One self-contained record per image (see :mod:`taskcodec.bitstream`)."""
        h, w = x.shape[-2:]
        return [pack_record(h, w, p) for p in self.compress(x, estimate=False)["payloads"]]

    def decode(self, records: list[bytes]) -> dict[str, Tensor]:
        """Decode records (of any mix of sizes) to logits, in the order given."""
        groups = payloads_by_size(records)
        out: dict[str, Any] = {}
        for size, (idx, payloads) in groups.items():
            part = self.decompress(payloads, size)
            if len(groups) == 1:
                return part
            out.setdefault("logits", torch.empty(len(records), part["logits"].shape[1]))[idx] = part["logits"]
        return out  # mixed sizes: logits only (latents and pixels differ in shape)

    def _require_cpu(self) -> None:
        if any(p.device.type != "cpu" for p in self.entropy.parameters()):
            raise ConfigError("compress/decompress run on CPU for deterministic decoding: call .cpu() first")

    # -- sides, parameters ----------------------------------------------------------------------
    def prune_to(self, side: str) -> TaskCodecBase:
        """Keep only the encoder's or the decoder's parts (what an exported file holds)."""
        if side not in ("encoder", "decoder"):
            raise ConfigError(f"side must be 'encoder' or 'decoder', got {side!r}")
        keep = set(self.encoder_parts if side == "encoder" else self.decoder_parts)
        for name in [n for n, _ in self.named_children() if n not in keep]:
            delattr(self, name)
        self.side = side
        return self

    def side_state_dict(self, side: str) -> dict[str, Tensor]:
        parts = self.encoder_parts if side == "encoder" else self.decoder_parts
        return {k: v for k, v in self.state_dict().items() if k.split(".")[0] in parts}

    def main_and_aux_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Split parameters: the quantiles get CompressAI's auxiliary loss and their own optimiser."""
        main, aux = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (aux if name.endswith(".quantiles") else main).append(p)
        return main, aux
