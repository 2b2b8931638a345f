"""Entropy stages: what turns a latent ``y`` into likelihoods for training and into bytes for coding.

Two stages, shared by every codec family:

* :class:`FactorizedEntropy`: CompressAI's ``EntropyBottleneck`` on ``y`` itself (one learned
  density per channel). Nothing but ``y`` is sent.
* :class:`HyperpriorEntropy`: the scale hyperprior of Ballé et al. (2018): ``z = h_a(|y|)`` goes
  through an ``EntropyBottleneck``, ``h_s(z_hat)`` predicts the scales of a ``GaussianConditional``
  for ``y``. ``z`` costs bytes of its own, which matters at latents of a few hundred symbols.

Coding writes every image into its own range-coded stream (``z`` first, then ``y``) through one
:class:`~taskcodec.range_coder.BatchEncoder` per batch (compiled kernels where numba is installed,
the Python reference coder otherwise: the same bytes) and reads them back in the same order.
"""

from __future__ import annotations

import copy
import zlib

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from taskcodec.range_coder import BatchDecoder, BatchEncoder, CdfTables


def _content_key(tensors) -> tuple:
    """A cheap fingerprint of some tensors' values (inference tensors have no version counter to key on)."""
    return tuple((tuple(t.shape), zlib.crc32(t.detach().cpu().contiguous().numpy().tobytes())) for t in tensors)


def _tables(model) -> CdfTables:
    """The model's CDF tables, converted once per ``update()`` (keyed on the buffers' contents)."""
    key = _content_key((model._quantized_cdf, model._cdf_length, model._offset))
    cached = getattr(model, "_taskcodec_tables", None)
    if cached is None or cached[0] != key:
        tables = CdfTables(model._quantized_cdf.numpy(), model._cdf_length.numpy(), model._offset.numpy())
        object.__setattr__(model, "_taskcodec_tables", (key, tables))  # a plain attribute, not a module/buffer
        return tables
    return cached[1]


def _write(encoders: BatchEncoder, symbols: Tensor, indexes: Tensor, tables: CdfTables) -> None:
    encoders.encode(symbols.flatten(1).numpy(), indexes.flatten(1).numpy(), tables)


def _read(decoders: BatchDecoder, indexes: Tensor, tables: CdfTables) -> Tensor:
    values = decoders.decode(indexes.flatten(1).numpy(), tables)
    return torch.from_numpy(values).to(torch.float32).reshape(indexes.shape)


def scale_indexes(gc: GaussianConditional, scales: Tensor) -> Tensor:
    """``gc.build_indexes(scales)`` in one pass: the number of scale-table entries (but the last) below each scale.

    CompressAI loops over the table (64 comparisons per symbol); ``torch.bucketize`` with
    ``right=False`` counts the boundaries strictly below each value, which is the same index,
    ties included (tested against CompressAI's own).
    """
    scales = gc.lower_bound_scale(scales)
    table = gc.scale_table[:-1].to(scales.dtype)
    return torch.bucketize(scales.contiguous(), table.contiguous(), right=False).int()


def _eb_median(eb: EntropyBottleneck, ndim: int) -> Tensor:
    return eb._get_medians().detach().reshape(1, -1, *([1] * (ndim - 2)))


class EntropyStage(nn.Module):
    """Common interface: ``forward`` for training, ``write``/``read`` for real coding."""

    #: how many times smaller ``z`` is than ``y`` per side (``y`` must be divisible by it)
    stride: int = 1

    def forward(self, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``(y_hat, likelihoods)``; in training ``y_hat`` is ``y`` rounded with a straight-through gradient."""
        raise NotImplementedError

    def write(self, y: Tensor, encoders: BatchEncoder) -> None:
        raise NotImplementedError

    def read(self, decoders: BatchDecoder, shape: tuple[int, int, int]) -> Tensor:
        raise NotImplementedError


class FactorizedEntropy(EntropyStage):
    """One learned density per channel of ``y`` (CompressAI's ``EntropyBottleneck``)."""

    def __init__(self, M: int) -> None:
        super().__init__()
        self.entropy_bottleneck = EntropyBottleneck(M)

    def forward(self, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        y_noisy, lik = self.entropy_bottleneck(y)
        if self.training:
            med = _eb_median(self.entropy_bottleneck, y.dim())
            y_hat = y + (torch.round(y - med) + med - y).detach()
        else:
            y_hat = y_noisy  # round(y - median) + median: what decoding rebuilds
        return y_hat, {"y": lik}

    def write(self, y: Tensor, encoders: BatchEncoder) -> None:
        eb = self.entropy_bottleneck
        symbols = eb.quantize(y, "symbols", _eb_median(eb, y.dim()))
        _write(encoders, symbols, eb._build_indexes(y.size()), _tables(eb))

    def read(self, decoders: BatchDecoder, shape: tuple[int, int, int]) -> Tensor:
        eb = self.entropy_bottleneck
        indexes = eb._build_indexes((decoders.batch, *shape))
        values = _read(decoders, indexes, _tables(eb))
        return values + _eb_median(eb, values.dim())


class HyperpriorEntropy(EntropyStage):
    """Scale hyperprior: ``z = h_a(|y|)`` is sent first and predicts the scales of ``y``.

    ``z_stages`` stride-2 convolutions make ``z`` that many times 2 smaller than ``y`` per side.
    """

    def __init__(self, M: int, N: int, z_channels: int, z_stages: int = 2) -> None:
        super().__init__()
        self.stride = 2**z_stages
        h_a: list[nn.Module] = [conv(M, N, 3, 1), nn.ReLU(inplace=True)]
        h_s: list[nn.Module] = []
        for i in range(z_stages):
            last = i == z_stages - 1
            h_a.append(conv(N, z_channels if last else N))
            h_s.append(deconv(z_channels if i == 0 else N, N))
            h_s.append(nn.ReLU(inplace=True))
            if not last:
                h_a.append(nn.ReLU(inplace=True))
        if z_stages == 0:
            h_a.append(conv(N, z_channels, 3, 1))
            h_s += [conv(z_channels, N, 3, 1), nn.ReLU(inplace=True)]
        h_s += [conv(N, M, 3, 1), nn.ReLU(inplace=True)]
        self.h_a, self.h_s = nn.Sequential(*h_a), nn.Sequential(*h_s)
        self.entropy_bottleneck = EntropyBottleneck(z_channels)
        self.gaussian_conditional = GaussianConditional(None)

    def forward(self, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z = self.h_a(torch.abs(y))
        with torch.autocast(device_type=y.device.type, enabled=False):  # entropy models stay fp32
            y, z = y.float(), z.float()
            z_hat, z_lik = self.entropy_bottleneck(z)
            y_noisy, y_lik = self.gaussian_conditional(y, self.h_s(z_hat))
        y_hat = y + (torch.round(y) - y).detach() if self.training else y_noisy
        return y_hat, {"y": y_lik, "z": z_lik}

    def _indexes(self, z_hat: Tensor) -> Tensor:
        # h_s in float64 on both sides: batch size and thread count change float32 conv results in
        # the last bit, and a scale that crosses a table boundary would desynchronise the decoder.
        key = _content_key(tuple(self.h_s.parameters()))
        cached = self.__dict__.get("_h_s64")
        if cached is None or cached[0] != key:  # a float64 copy, made again only when h_s changes
            cached = (key, copy.deepcopy(self.h_s).double().eval())
            self.__dict__["_h_s64"] = cached
        with torch.no_grad():
            return scale_indexes(self.gaussian_conditional, cached[1](z_hat.double()).float())

    def write(self, y: Tensor, encoders: BatchEncoder) -> None:
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        z = self.h_a(torch.abs(y))
        med = _eb_median(eb, z.dim())
        z_symbols = eb.quantize(z, "symbols", med)
        _write(encoders, z_symbols, eb._build_indexes(z.size()), _tables(eb))
        indexes = self._indexes(z_symbols.float() + med)
        _write(encoders, gc.quantize(y, "symbols"), indexes, _tables(gc))

    def read(self, decoders: BatchDecoder, shape: tuple[int, int, int]) -> Tensor:
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        c, h, w = shape
        z_size = (decoders.batch, eb.channels, h // self.stride, w // self.stride)
        z_hat = _read(decoders, eb._build_indexes(z_size), _tables(eb)) + _eb_median(eb, 4)
        return _read(decoders, self._indexes(z_hat), _tables(gc))


def build_entropy(kind: str, M: int, N: int, z_channels: int, z_stages: int) -> EntropyStage:
    """``factorized`` or ``hyperprior`` (a :class:`ConfigError` otherwise)."""
    from taskcodec.errors import ConfigError

    if kind == "factorized":
        return FactorizedEntropy(M)
    if kind == "hyperprior":
        return HyperpriorEntropy(M, N, z_channels, z_stages)
    raise ConfigError(f"entropy must be 'factorized' or 'hyperprior', got {kind!r}")
