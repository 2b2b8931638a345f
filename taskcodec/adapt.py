"""A new server for an unchanged client: the plain-PyTorch half of ``taskcodec adapt``.

A deployed client (``encoder-<id>.pt``) keeps writing the same bytes; only the server learns new
classes. :func:`server_codec` builds that server from an export: the entropy stage exactly as
exported (so every record the client writes still decodes), the other decoder parts either fresh
or taken from a decoder export with the class layer re-initialised. :func:`export_server` writes
the trained server as a decoder file that keeps the *client's* model id, so ``taskcodec classify``
accepts the client's containers with it. The training loop itself is Lightning's
(:class:`lightning_modules.server.ServerModule`), and the workflow (pack -> train -> export) is
:func:`lightning_modules.adapt.adapt`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from taskcodec.datasets import LabelledImages
from taskcodec.errors import CheckpointError, ConfigError
from taskcodec.export import (
    DECODER_KIND,
    ENCODER_KIND,
    EXPORT_VERSION,
    SOURCE_KEY,
    _atomic_save,
    _build,
    read_export,
)
from taskcodec.models import TaskCodecBase

SERVER_RESETS = ("all", "head", "none")


def server_parts(codec: TaskCodecBase) -> list[str]:
    """The decoder's trainable parts: everything it holds except the entropy stage."""
    return [name for name in codec.decoder_parts if name != "entropy"]


def server_codec(
    export: str | os.PathLike | dict, num_classes: int | None = None, server: str | None = None, reset: str = "all"
) -> tuple[TaskCodecBase, dict]:
    """The decoder side of an export's codec, ready to train a server for ``num_classes`` classes.

    Args:
        export: an encoder export (the server parts start fresh) or a decoder export: its path, or
            the dict :func:`taskcodec.export.read_export` returned (so a workflow reads it once).
        num_classes: classes of the new server (default: the export's).
        server: the family's server variant (``"linear"`` for the split family's linear probe);
            default: the export's.
        reset: ``"all"``: fresh server parts; ``"head"``: keep the decoder export's server parts but
            re-initialise the class layer (new classes); ``"none"``: keep them all (fine-tuning on the
            same classes). Tensors whose shape changed are always fresh.

    Returns:
        The codec (pruned to the decoder side, in train mode) and the export's meta with its kind.
    """
    if reset not in SERVER_RESETS:
        raise ConfigError(f"server reset must be one of {SERVER_RESETS}, got {reset!r}")
    if num_classes is not None and num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    blob = export if isinstance(export, dict) else read_export(export)
    export_path = blob.get(SOURCE_KEY, "the export")
    config = dict(blob["config"])
    if num_classes is not None:
        config["num_classes"] = int(num_classes)
    if server is not None:
        config["server"] = server
    codec = _build(blob["family"], config, str(export_path)).prune_to("decoder")
    source = blob["state_dict"]
    same_variant = config.get("server") == blob["config"].get("server")
    keep_server = blob["kind"] == DECODER_KIND and reset != "all" and same_variant
    if reset != "all" and blob["kind"] == ENCODER_KIND:
        raise ConfigError(f"{export_path} is an encoder file: it has no server to keep; use reset='all' or a decoder file")
    head = tuple(codec.classifier_head_prefixes()) if reset == "head" else ()
    state = codec.state_dict()
    for name, value in source.items():
        part = name.split(".")[0]
        if part == "entropy":
            state[name] = value  # CompressAI's load_state_dict resizes the CDF buffers to fit
        elif keep_server and part in server_parts(codec) and name in state and not name.startswith(head):
            if state[name].shape == value.shape:
                state[name] = value
    missing = [k for k in state if k.startswith("entropy.") and k not in source]
    if missing:
        raise CheckpointError(f"{export_path} lacks entropy-stage tensors {missing[:3]}; re-export it")
    codec.load_state_dict(state)
    codec.entropy.requires_grad_(False)
    meta = {"codec_id": blob["codec_id"], "family": blob["family"], "kind": blob["kind"], **blob.get("meta", {})}
    return codec.train(), meta


def teacher_logits(
    teacher_ckpt: str | os.PathLike,
    images: LabelledImages,
    out_dir: str | os.PathLike,
    size: tuple[int, int] | None,
    skipped: list[dict] | tuple = (),
    batch_size: int = 64,
    workers: int = 2,
    crop_pct: float = 1.0,
) -> tuple[torch.Tensor, dict]:
    """A teacher classifier's logits on every image a pack holds, in the pack's order; cached.

    The teacher (a ``train.py`` classifier checkpoint of the same classes, e.g. the reference of the
    new task) sees each image as the client did: resized and centre-cropped to the export's input
    ``size``. The images in ``skipped`` (the pack's unreadable ones) are left out. The logits are
    saved in ``out_dir/teacher-<teacher id>.pt`` and reused when the same teacher and image listing
    come again. Returns them and ``{"teacher_id", "teacher_seconds"}``.

    Raises:
        ConfigError: when the teacher has another number of classes than the images.
    """
    import numpy as np

    from taskcodec.io import encode_by_size, read_rgb, to_tensor
    from taskcodec.models.classifier import load_image_classifier

    model = load_image_classifier(str(teacher_ckpt))
    classes = int(model.model.num_classes)
    if classes != len(images.class_names):
        raise ConfigError(
            f"the teacher {teacher_ckpt} is a {classes}-class classifier, the images have {len(images.class_names)} "
            "classes; give the classifier trained on these classes (in the same order)"
        )
    gone = {entry["name"] for entry in skipped}
    keep = [i for i, name in enumerate(images.names) if name not in gone]
    listing = hashlib.sha256("\n".join(images.names[i] for i in keep).encode()).hexdigest()
    cache = Path(out_dir) / f"teacher-{model.content_id}.pt"
    info = {"teacher_id": model.content_id, "teacher_seconds": 0.0}
    if cache.exists():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved.get("listing_sha256") == listing and saved.get("size") == (list(size) if size else None):
            return saved["logits"], info
    t0 = time.perf_counter()

    def load(i: int) -> np.ndarray:
        return read_rgb(images.read(i), images.names[i], size=size, crop=True, crop_pct=crop_pct)

    logits: list[torch.Tensor] = []
    with torch.inference_mode(), ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(keep), batch_size):
            arrays = list(pool.map(load, keep[start : start + batch_size]))
            logits += encode_by_size(arrays, lambda batch: list(model(to_tensor(batch))))  # native sizes: one batch per size
    result = torch.stack(logits).float() if logits else torch.zeros(0, classes)
    info["teacher_seconds"] = time.perf_counter() - t0
    cache.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save({"listing_sha256": listing, "size": list(size) if size else None, "logits": result}, cache)
    return result, info


def server_id(codec: TaskCodecBase) -> str:
    """Content hash of a server's own weights (its config included), to tell adapted servers apart."""
    from taskcodec.export import codec_id

    return codec_id(codec.family, codec.config, codec.side_state_dict("decoder"))


def export_server(
    codec: TaskCodecBase,
    client_meta: dict,
    out_dir: str | os.PathLike,
    class_names: list[str],
    class_words: list[str] | None = None,
    encoder_path: str | os.PathLike | None = None,
    extra_meta: dict | None = None,
) -> Path:
    """Write ``decoder-<client id>.pt`` for a retrained server (and copy the encoder beside it).

    The file keeps the client's model id, because containers carry the id of the model that
    *wrote* them; ``meta["adapted"]`` records the server's own hash, the source model and classes.
    """
    if len(class_names) != int(codec.config["num_classes"]):
        raise ConfigError(f"{len(class_names)} class names for a {codec.config['num_classes']}-class server")
    codec = codec.cpu().eval()
    cid = client_meta["codec_id"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keep = {k: v for k, v in client_meta.items() if k not in ("codec_id", "family", "kind", "class_names", "class_words", "adapted")}
    meta = keep | {
        "class_names": list(class_names),
        "class_words": list(class_words or class_names),
        "adapted": {"server_id": server_id(codec), "client_codec_id": cid, **(extra_meta or {})},
    }
    path = out / f"decoder-{cid}.pt"
    state = {k: v.detach().clone() for k, v in codec.side_state_dict("decoder").items()}
    _atomic_save(
        {"kind": DECODER_KIND, "version": EXPORT_VERSION, "codec_id": cid, "family": codec.family,
         "config": dict(codec.config), "meta": meta, "state_dict": state},
        path,
    )  # fmt: skip
    if encoder_path is not None:
        target = out / f"encoder-{cid}.pt"
        if Path(encoder_path).resolve() != target.resolve():
            tmp = target.with_name(target.name + ".part")
            shutil.copyfile(encoder_path, tmp)
            os.replace(tmp, target)
    return path


__all__ = ["SERVER_RESETS", "export_server", "server_codec", "server_id", "server_parts"]
