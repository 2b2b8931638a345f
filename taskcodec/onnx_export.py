"""``taskcodec export --onnx``: a client and a server that need no PyTorch, as ONNX graphs plus tables.

Writes ``client-<id>.onnx`` (RGB in [0, 1], replicate-padded to the stride -> the latent ``y``) and
``client-<id>.npz`` (the factorized entropy model's quantised CDFs, lengths, offsets and medians,
the stride, the model id and the preprocessing as JSON). :mod:`taskcodec.client` reads both with
numpy, onnxruntime, Pillow and the compiled range coder and writes the same container files as
``taskcodec compress``.

Given a decoder, it writes ``server-<id>.onnx`` (the decoded latent ``y_hat`` -> logits: ``g_s``
and the classifier tail) and ``server-<id>.npz`` (the same entropy tables, the class names and
words). :mod:`taskcodec.server_model` range-decodes with the tables and runs the graph in
onnxruntime, so ``taskcodec serve -m server-<id>.onnx`` runs without torch.

Only the factorized entropy model is exported. Its CDF for a symbol depends on the channel alone,
so whatever float rounding the client's runtime adds to ``y`` changes at most a symbol's value,
never which table the server decodes it with: the two ends cannot desynchronise. A hyperprior's
``h_s`` would compute the tables from decoded side information in two runtimes, where one rounding
difference in a scale index garbles the rest of the stream; it is refused until ``h_s`` runs in
integer arithmetic on both ends.

CompressAI's GDN computes its parameters through a custom autograd function that ONNX cannot
trace (CompressAI issues #87, #247, #287); the export replaces each GDN by the same arithmetic on
its effective ``beta``/``gamma``, taken once.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from compressai.layers import GDN
from torch import Tensor, nn

from taskcodec.errors import ConfigError
from taskcodec.models import TaskCodecBase
from taskcodec.models.entropy import FactorizedEntropy, _eb_median

ONNX_CLIENT_VERSION = 1
OPSET = 17


class FrozenGDN(nn.Module):
    """GDN (or its inverse) with its reparametrised ``beta`` and ``gamma`` as plain constants."""

    def __init__(self, gdn: GDN) -> None:
        super().__init__()
        with torch.no_grad():
            beta = gdn.beta_reparam(gdn.beta).detach().clone()
            gamma = gdn.gamma_reparam(gdn.gamma).detach().clone()
        self.register_buffer("beta", beta)
        self.register_buffer("gamma", gamma.reshape(len(beta), len(beta), 1, 1))
        self.inverse = gdn.inverse

    def forward(self, x: Tensor) -> Tensor:
        norm = F.conv2d(x * x, self.gamma, self.beta)
        return x * (torch.sqrt(norm) if self.inverse else torch.rsqrt(norm))


def _freeze_gdn(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, GDN):
            setattr(module, name, FrozenGDN(child))
        else:
            _freeze_gdn(child)
    return module


class _Analysis(nn.Module):
    def __init__(self, codec: TaskCodecBase) -> None:
        super().__init__()
        self.codec = codec

    def forward(self, x: Tensor) -> Tensor:
        return self.codec.analysis(x)


class _Synthesis(nn.Module):
    """``y_hat`` -> logits: what the server runs after range decoding (``g_s`` and the classifier tail)."""

    def __init__(self, codec: TaskCodecBase) -> None:
        super().__init__()
        self.codec = codec

    def forward(self, y_hat: Tensor) -> Tensor:
        return self.codec.synthesis(y_hat, (0, 0))["logits"]  # families without pixels ignore the size


def _check_exportable(codec: TaskCodecBase, what: str) -> None:
    if not isinstance(codec.entropy, FactorizedEntropy):
        raise ConfigError(
            f"an ONNX {what} is exported for the factorized entropy model only, this {codec.family} codec has "
            f"{type(codec.entropy).__name__}: its h_s would run in two runtimes and could desynchronise the "
            f"decoder; train with model.codec.entropy=factorized for a torch-free {what}"
        )
    try:
        import onnx  # noqa: F401  (torch.onnx needs it)
    except ImportError as e:
        raise ConfigError("`taskcodec export --onnx` needs the onnx package: pip install onnx") from e


def _write_onnx(net: nn.Module, example: Tensor, path: Path, names: tuple[str, str], axes: dict) -> None:
    tmp = path.with_name(path.name + ".part")
    try:
        torch.onnx.export(net, (example,), str(tmp), input_names=[names[0]], output_names=[names[1]],
                          opset_version=OPSET, dynamo=False, dynamic_axes=axes)  # fmt: skip
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_tables(codec: TaskCodecBase, path: Path, codec_id: str, extra: dict) -> None:
    """The factorized model's quantised CDFs, lengths, offsets and medians, and what a reader checks."""
    eb = codec.entropy.entropy_bottleneck
    tables = {
        "version": np.array(ONNX_CLIENT_VERSION),
        "codec_id": np.array(codec_id),
        "family": np.array(codec.family),
        "stride": np.array(codec.stride),
        "analysis_stride": np.array(codec.analysis_stride),
        "latent_channels": np.array(codec.latent_channels),
        "cdfs": eb._quantized_cdf.numpy().astype(np.int32),
        "cdf_lengths": eb._cdf_length.numpy().astype(np.int64),
        "offsets": eb._offset.numpy().astype(np.int64),
        "medians": _eb_median(eb, 4).reshape(-1).numpy().astype(np.float32),
        **{k: np.array(json.dumps(v, default=str)) for k, v in extra.items()},
    }
    tmp_npz = path.with_name(path.name + ".part.npz")
    try:
        np.savez(tmp_npz, **tables)
        os.replace(tmp_npz, path)
    finally:
        tmp_npz.unlink(missing_ok=True)


def export_onnx_client(codec: TaskCodecBase, out_dir: str | os.PathLike, codec_id: str, meta: dict) -> tuple[Path, Path]:
    """Write ``client-<id>.onnx`` and ``client-<id>.npz`` for an updated codec; returns their paths."""
    _check_exportable(codec, "client")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = _Analysis(_freeze_gdn(copy.deepcopy(codec).cpu().eval())).eval()
    s = codec.stride
    onnx_path, npz_path = out / f"client-{codec_id}.onnx", out / f"client-{codec_id}.npz"
    _write_onnx(net, torch.rand(1, 3, 4 * s, 4 * s), onnx_path, ("x", "y"),
                {"x": {0: "batch", 2: "height", 3: "width"}, "y": {0: "batch", 2: "h", 3: "w"}})  # fmt: skip
    _write_tables(codec, npz_path, codec_id, {"preprocessing": meta.get("preprocessing")})
    return onnx_path, npz_path


def export_onnx_server(codec: TaskCodecBase, out_dir: str | os.PathLike, codec_id: str, meta: dict) -> tuple[Path, Path]:
    """Write ``server-<id>.onnx`` (``y_hat`` -> logits) and ``server-<id>.npz`` for a decoder; returns their paths."""
    _check_exportable(codec, "server")
    if codec.has_pixels:
        raise ConfigError(f"a {codec.family} codec that decodes pixels crops them to each image's size, which its "
                          "ONNX graph cannot take; serve its decoder-<id>.pt instead")  # fmt: skip
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = _Synthesis(_freeze_gdn(copy.deepcopy(codec).cpu().eval())).eval()
    onnx_path, npz_path = out / f"server-{codec_id}.onnx", out / f"server-{codec_id}.npz"
    example = torch.zeros(2, *codec.latent_shape(4 * codec.stride, 4 * codec.stride))
    _write_onnx(net, example, onnx_path, ("y_hat", "logits"),
                {"y_hat": {0: "batch", 2: "h", 3: "w"}, "logits": {0: "batch"}})  # fmt: skip
    _write_tables(codec, npz_path, codec_id, {"meta": {k: v for k, v in meta.items() if k not in ("codec_id", "family")}})
    return onnx_path, npz_path
