"""Export a trained codec into the two files that production needs, for any registered family.

* ``encoder-<id>.pt``: the family's ``encoder_parts`` (what a client needs to compress, CDF
  tables already computed).
* ``decoder-<id>.pt``: its ``decoder_parts`` (what a server needs to classify), plus the class
  names when the training data had them.

Both are plain dicts of tensors and primitives, so they load with ``torch.load(weights_only=True)``
in a process that never imports Lightning or Hydra. ``<id>`` is the first 16 hex digits of a
SHA-256 over the whole updated codec and its config, shared by the pair, and written into every
container file, so a file and its decoder can be matched.

A training checkpoint carries the codec as a plain payload under :data:`PAYLOAD_KEY`:
``{"family", "config", "state_dict", "meta"}`` (the Lightning system writes it), so nothing here
knows Lightning's attribute names.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from taskcodec.errors import CheckpointError, ConfigError
from taskcodec.models import TaskCodecBase, create_codec, read_checkpoint

EXPORT_VERSION = 2
ENCODER_KIND, DECODER_KIND = "taskcodec-encoder", "taskcodec-decoder"
PAYLOAD_KEY = "taskcodec"


def codec_id(family: str, config: dict, state: dict[str, torch.Tensor]) -> str:
    """Content hash of a codec: family, config, and every tensor's name, dtype, shape and values."""
    h = hashlib.sha256(f"{family}|{json.dumps(config, sort_keys=True)}".encode())
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


def codec_payload(codec: TaskCodecBase, meta: dict | None = None) -> dict:
    """What a training checkpoint stores under :data:`PAYLOAD_KEY`."""
    return {"family": codec.family, "config": dict(codec.config), "state_dict": codec.state_dict(), "meta": dict(meta or {})}


def _build(family: str, config: dict, where: str) -> TaskCodecBase:
    try:
        return create_codec(family, **config)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{where}: cannot rebuild codec family {family!r} from its stored config: {e}") from e


def codec_from_checkpoint(ckpt_path: str | os.PathLike) -> tuple[TaskCodecBase, dict]:
    """Rebuild the codec of a training checkpoint (anything ``train.py`` wrote), without Lightning."""
    ckpt = read_checkpoint(str(ckpt_path))
    payload = ckpt.get(PAYLOAD_KEY) if isinstance(ckpt, dict) else None
    if not isinstance(payload, dict) or not {"family", "config", "state_dict"} <= set(payload):
        raise CheckpointError(
            f"{ckpt_path} is not a codec checkpoint (no '{PAYLOAD_KEY}' payload); "
            "export the .ckpt written by `python train.py` with model=joint"
        )
    codec = _build(payload["family"], payload["config"], str(ckpt_path))
    try:
        codec.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{ckpt_path}: weights do not match its own config: {e}") from e
    return codec.eval(), dict(payload.get("meta", {}))


def load_codec_state(codec: TaskCodecBase, ckpt_path: str | os.PathLike) -> dict:
    """Load a training checkpoint's codec weights into ``codec`` (same family and config); returns its meta.

    This is how a second training stage starts from the first: the codec is built from the new
    run's config, and the checkpoint must have been made with the same one.
    """
    other, meta = codec_from_checkpoint(ckpt_path)
    if other.family != codec.family or other.config != codec.config:
        raise CheckpointError(
            f"{ckpt_path} holds a {other.family} codec with config {other.config}, but this run builds "
            f"{codec.family} with {codec.config}; use the same model.codec settings as the run that made it"
        )
    codec.load_state_dict(other.state_dict())
    return meta


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".part")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # never leave a half-written export behind


def export_codec(codec: TaskCodecBase, out_dir: str | os.PathLike, meta: dict | None = None) -> tuple[Path, Path]:
    """Update the CDFs, then write the encoder and decoder files; returns their paths."""
    codec = codec.cpu().eval()
    codec.update(force=True)
    cid = codec_id(codec.family, codec.config, codec.state_dict())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, side in ((ENCODER_KIND, "encoder"), (DECODER_KIND, "decoder")):
        part = {k: v.clone() for k, v in codec.side_state_dict(side).items()}
        path = out / f"{side}-{cid}.pt"
        _atomic_save(
            {"kind": kind, "version": EXPORT_VERSION, "codec_id": cid, "family": codec.family,
             "config": dict(codec.config), "meta": dict(meta or {}), "state_dict": part},
            path,
        )  # fmt: skip
        paths.append(path)
    return paths[0], paths[1]


def export_checkpoint(ckpt_path: str | os.PathLike, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``taskcodec export``: a training checkpoint in, ``encoder-<id>.pt`` and ``decoder-<id>.pt`` out."""
    codec, meta = codec_from_checkpoint(ckpt_path)
    return export_codec(codec, out_dir, meta)


#: key under which :func:`read_export` records where the export came from (for messages only)
SOURCE_KEY = "_path"


def read_export(path: str | os.PathLike) -> dict:
    """The raw export dict, checked for kind and version (no model is built), with its path under :data:`SOURCE_KEY`."""
    blob = read_checkpoint(str(path))
    if not isinstance(blob, dict) or blob.get("kind") not in (ENCODER_KIND, DECODER_KIND):
        raise CheckpointError(f"{path} is not a taskcodec export; make one with `taskcodec export CKPT`")
    if blob.get("version") != EXPORT_VERSION:
        raise CheckpointError(
            f"{path} has export version {blob.get('version')}; this taskcodec reads version "
            f"{EXPORT_VERSION}: re-export the checkpoint with this version"
        )
    blob[SOURCE_KEY] = str(path)
    return blob


def _load(path: str | os.PathLike, kind: str) -> tuple[TaskCodecBase, dict]:
    return codec_from_export(read_export(path), kind)


def codec_from_export(blob: dict, kind: str) -> tuple[TaskCodecBase, dict]:
    """``(codec, meta)`` of an export already read with :func:`read_export` (one read, many uses)."""
    path = blob.get(SOURCE_KEY, "the export")
    if blob["kind"] != kind:
        raise CheckpointError(f"{path} is a {blob['kind']} file, but a {kind} file is needed here")
    codec = _build(blob["family"], blob["config"], str(path))
    codec.prune_to("encoder" if kind == ENCODER_KIND else "decoder")
    try:
        codec.load_state_dict(blob["state_dict"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: weights do not match the stored config: {e}") from e
    return codec.eval(), {"codec_id": blob["codec_id"], "family": blob["family"], **blob.get("meta", {})}


def load_encoder(path: str | os.PathLike) -> tuple[TaskCodecBase, dict]:
    """The client side: ``codec.encode(x)`` gives one record per image."""
    return _load(path, ENCODER_KIND)


def load_decoder(path: str | os.PathLike) -> tuple[TaskCodecBase, dict]:
    """The server side: ``codec.decode(records)['logits']`` classifies without the encoder."""
    return _load(path, DECODER_KIND)
