"""Export a trained joint codec into the two files that production needs.

* ``encoder-<id>.pt``: what a client needs to compress (``g_a``, ``h_a``, ``h_s`` and the entropy
  models with their CDF tables already computed).
* ``decoder-<id>.pt``: what a server needs to classify (``h_s``, the entropy models, ``g_s`` for
  the pixel head, and the classifier).

Both are plain dicts of tensors and primitives, so they load with ``torch.load(weights_only=True)``
in a process that never imports Lightning or Hydra. ``<id>`` is the first 8 hex digits of a SHA-256
over the whole updated codec, shared by the pair, so a stream and its decoder can be matched.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from taskcodec.errors import CheckpointError
from taskcodec.models import CodecConfig, TaskCodec, read_checkpoint, strip_prefix

EXPORT_VERSION = 1
ENCODER_KIND, DECODER_KIND = "taskcodec-encoder", "taskcodec-decoder"
ENCODER_PREFIXES = ("g_a.", "h_a.", "h_s.", "entropy_bottleneck.", "gaussian_conditional.")
DECODER_PREFIXES = ("h_s.", "entropy_bottleneck.", "gaussian_conditional.", "g_s.", "classifier.")
CONFIG_KEYS = ("N", "M", "num_stages", "head", "classifier", "num_classes")


def codec_id(state: dict[str, torch.Tensor]) -> str:
    """Content hash of a state dict: names, dtypes, shapes and values, in a fixed order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:8]


def codec_from_lightning(ckpt_path: str | os.PathLike) -> tuple[TaskCodec, dict]:
    """Rebuild the :class:`TaskCodec` of a ``JointCodecModule`` checkpoint, without Lightning."""
    ckpt = read_checkpoint(str(ckpt_path))
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not hp or not all(k in hp for k in CONFIG_KEYS) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{ckpt_path} is not a joint-codec checkpoint (no codec hyper-parameters); "
            "export the .ckpt written by `python train.py` with model=joint"
        )
    config = CodecConfig(**{k: hp[k] for k in CONFIG_KEYS})
    state = strip_prefix(ckpt["state_dict"], "model.")
    codec = TaskCodec(config)
    try:
        codec.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt_path}: weights do not match its own config: {e}") from e
    meta = {k: hp[k] for k in ("lmbda", "distill") if k in hp}
    return codec.eval(), meta


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".part")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # never leave a half-written export behind


def export_codec(codec: TaskCodec, out_dir: str | os.PathLike, meta: dict | None = None) -> tuple[Path, Path]:
    """Update the CDFs, then write the encoder and decoder files; returns their paths."""
    codec = codec.cpu().eval()
    codec.update(force=True)
    state = codec.state_dict()
    cid = codec_id(state)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, prefixes in ((ENCODER_KIND, ENCODER_PREFIXES), (DECODER_KIND, DECODER_PREFIXES)):
        part = {k: v.clone() for k, v in state.items() if k.startswith(prefixes)}
        path = out / f"{kind.split('-')[1]}-{cid}.pt"
        _atomic_save(
            {"kind": kind, "version": EXPORT_VERSION, "codec_id": cid, "config": codec.config.to_dict(),
             "meta": dict(meta or {}), "state_dict": part},
            path,
        )  # fmt: skip
        paths.append(path)
    return paths[0], paths[1]


def export_checkpoint(ckpt_path: str | os.PathLike, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``taskcodec export``: a Lightning checkpoint in, ``encoder-<id>.pt`` and ``decoder-<id>.pt`` out."""
    codec, meta = codec_from_lightning(ckpt_path)
    return export_codec(codec, out_dir, meta)


def _load(path: str | os.PathLike, kind: str) -> tuple[TaskCodec, dict]:
    blob = read_checkpoint(str(path))
    if not isinstance(blob, dict) or blob.get("kind") not in (ENCODER_KIND, DECODER_KIND):
        raise CheckpointError(f"{path} is not a taskcodec export; make one with `taskcodec export CKPT`")
    if blob["kind"] != kind:
        raise CheckpointError(f"{path} is a {blob['kind']} file, but a {kind} file is needed here")
    if blob.get("version") != EXPORT_VERSION:
        raise CheckpointError(
            f"{path} has export version {blob.get('version')}; this taskcodec reads version "
            f"{EXPORT_VERSION}: re-export the checkpoint with this version"
        )
    cfg = {k: v for k, v in blob["config"].items() if k in CodecConfig.__dataclass_fields__}
    codec = TaskCodec(CodecConfig(**cfg), with_encoder=kind == ENCODER_KIND, with_decoder=kind == DECODER_KIND)
    try:
        codec.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the stored config: {e}") from e
    return codec.eval(), {"codec_id": blob["codec_id"], **blob.get("meta", {})}


def load_encoder(path: str | os.PathLike) -> tuple[TaskCodec, dict]:
    """The client side: ``codec.encode(x)`` gives one byte string per image."""
    return _load(path, ENCODER_KIND)


def load_decoder(path: str | os.PathLike) -> tuple[TaskCodec, dict]:
    """The server side: ``codec.decode(streams)['logits']`` classifies without the encoder."""
    return _load(path, DECODER_KIND)
