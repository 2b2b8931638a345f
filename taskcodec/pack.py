"""``taskcodec pack``: a labelled dataset compressed into WebDataset tar shards, resumable.

Layout of an output folder (see ``docs/format.md``)::

    manifest.json          the plan: model id, source, split, image count, shard size, classes,
                           a hash of the image list, and "complete" once every shard is written
    shard-00000.tar        WebDataset shard: one sample "shard-00000" whose member
                           "shard-00000.tca" is a container archive (labels and names included)

Shard ``i`` always holds images ``i*shard_size .. (i+1)*shard_size-1`` of a deterministic list, and
every file is written to ``<name>.part`` and renamed, so a shard either exists whole or not at all.
A killed pack, run again with the same arguments, checks the manifest and writes only the missing
shards: no image is lost or duplicated.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

from taskcodec.batching import encode_sources
from taskcodec.container import ContainerWriter, read_container, write_file_atomic
from taskcodec.datasets import LabelledImages, image_folder_split, locate_tiny_imagenet, tiny_imagenet_split
from taskcodec.errors import ConfigError, DataError
from taskcodec.io import IMAGE_EXTENSIONS
from taskcodec.models import TaskCodecBase
from taskcodec.preprocessing import crop_fraction, input_size

MANIFEST = "manifest.json"
PACK_FORMAT, PACK_VERSION = "taskcodec-pack", 1


def shard_name(i: int) -> str:
    return f"shard-{i:05d}"


def open_source(
    source: str | os.PathLike, kind: str = "auto", split: str = "train", num_classes: int | None = None,
    first_class: int = 0,
) -> LabelledImages:  # fmt: skip
    """The labelled images of a Tiny ImageNet zip/folder or a class-per-folder tree."""
    if kind == "auto":
        kind = "tiny-imagenet" if locate_tiny_imagenet(source) is not None else "image-folder"
    if kind == "tiny-imagenet":
        return tiny_imagenet_split(source, split, num_classes, first_class)
    if kind == "image-folder":
        return image_folder_split(source, IMAGE_EXTENSIONS)
    raise ConfigError(f"dataset kind must be auto, tiny-imagenet or image-folder, got {kind!r}")


def _listing_hash(images: LabelledImages) -> str:
    h = hashlib.sha256()
    for name, label in zip(images.names, images.labels, strict=True):
        h.update(f"{name}\t{label}\n".encode())
    return h.hexdigest()


def _plan(images: LabelledImages, meta: dict, source: str, split: str, shard_size: int) -> dict:
    return {
        "format": PACK_FORMAT, "version": PACK_VERSION, "codec_id": meta["codec_id"], "family": meta["family"],
        "source": source, "split": split, "count": len(images), "shard_size": shard_size,
        "num_shards": -(-len(images) // shard_size), "listing_sha256": _listing_hash(images),
        "class_names": images.class_names, "class_words": images.class_words, "complete": False,
    }  # fmt: skip


def _write_manifest(out: Path, plan: dict) -> None:
    write_file_atomic(out / MANIFEST, json.dumps(plan, indent=1).encode())


def read_manifest(folder: str | os.PathLike) -> dict:
    """A pack folder's manifest, checked for format and version."""
    path = Path(folder) / MANIFEST
    try:
        plan = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise DataError(f"{folder} is not a pack folder (no {MANIFEST}); make one with `taskcodec pack`") from err
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {path}: {err}") from err
    if not isinstance(plan, dict) or plan.get("format") != PACK_FORMAT or plan.get("version") != PACK_VERSION:
        raise DataError(f"{path} is not a version-{PACK_VERSION} taskcodec pack manifest")
    return plan


def _write_shard(path: Path, key: str, archive: bytes) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(f"{key}.tca")
        info.size, info.mtime, info.mode = len(archive), 0, 0o644
        tar.addfile(info, io.BytesIO(archive))
    write_file_atomic(path, buffer.getvalue())


def pack(
    encoder: TaskCodecBase,
    meta: dict,
    images: LabelledImages,
    out: str | os.PathLike,
    source: str,
    split: str,
    shard_size: int = 1000,
    batch_size: int = 32,
    workers: int = 2,
    on_done: Callable[[int], None] | None = None,
    names: bool = True,
    on_error: Callable[[str, Exception], None] | None = None,
) -> dict:
    """Compress ``images`` into shards under ``out``, resuming a previous run; returns the manifest.

    ``names=False`` stores labels and records only: at a few bytes per record, the image names
    are most of a pack's size (the listing's hash still pins the order).

    With ``on_error``, an image that cannot be read is passed to it (name, error), left out of its
    shard and listed under ``skipped`` in the manifest (kept across resumed runs); without it the
    first such image stops the run.

    Raises:
        DataError: when ``out`` holds a pack of another model, dataset or shard size.
    """
    if shard_size < 1:
        raise ConfigError(f"shard size must be >= 1, got {shard_size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = _plan(images, meta, source, split, shard_size) | {"names": names}
    if (out / MANIFEST).exists():
        old = read_manifest(out)
        for field in ("codec_id", "count", "shard_size", "listing_sha256", "split", "names"):
            if old.get(field) != plan[field]:
                raise DataError(
                    f"{out} holds a pack with {field}={old.get(field)!r}, this run has {plan[field]!r}; "
                    "resume with the same arguments or pack into an empty folder"
                )
        plan["skipped"] = old.get("skipped", [])
    else:
        plan["skipped"] = []
        _write_manifest(out, plan)
    for stale in out.glob("*.part"):
        stale.unlink()  # left by a killed run; the shard it belonged to is redone below
    done = [i for i in range(plan["num_shards"]) if (out / f"{shard_name(i)}.tar").exists()]
    if on_done is not None and done:
        on_done(sum(min(shard_size, len(images) - i * shard_size) for i in done))
    for i in range(plan["num_shards"]):
        if i in done:
            continue
        first = i * shard_size
        count = min(shard_size, len(images) - first)
        buffer = io.BytesIO()
        writer = ContainerWriter(buffer, meta["codec_id"])

        def read(k: int, first: int = first) -> tuple[bytes, str]:
            return images.read(first + k), images.names[first + k]

        skipped: list[dict] = []

        def skip(k: int, err: Exception, first: int = first, skipped: list = skipped) -> None:
            skipped.append({"name": images.names[first + k], "reason": str(err)})
            on_error(images.names[first + k], err)  # type: ignore[misc]

        # the export's preprocessing, as `taskcodec compress` applies it: a server learns what clients send
        for k, record in encode_sources(encoder, count, read, batch_size, workers, on_done=on_done, size=input_size(meta), crop_pct=crop_fraction(meta),
                                        on_error=skip if on_error is not None else None):  # fmt: skip
            writer.add(record, images.labels[first + k], images.names[first + k] if names else None)
        writer.close()
        _write_shard(out / f"{shard_name(i)}.tar", shard_name(i), buffer.getvalue())
        if skipped:  # recorded with the shard, so a resumed run still knows what this one left out
            plan["skipped"] += skipped
            _write_manifest(out, plan)
    plan["complete"] = True
    _write_manifest(out, plan)
    return plan


def shard_paths(folder: str | os.PathLike) -> list[Path]:
    """The shard files of a complete pack, in order."""
    plan = read_manifest(folder)
    if not plan.get("complete"):
        raise DataError(f"the pack in {folder} is incomplete; run the same `taskcodec pack` command again to finish it")
    paths = [Path(folder) / f"{shard_name(i)}.tar" for i in range(plan["num_shards"])]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"the pack in {folder} lacks {len(missing)} shards ({missing[:3]}); re-run `taskcodec pack`")
    return paths


def read_shard(path: str | os.PathLike):
    """The container of one shard (without WebDataset; for checks and ``taskcodec info``)."""
    try:
        with tarfile.open(path) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith(".tca") and m.isfile()), None)
            if member is None:
                raise DataError(f"{path} holds no .tca member; it is not a taskcodec shard")
            data = tar.extractfile(member).read()
    except (tarfile.TarError, OSError) as err:
        raise DataError(f"cannot read shard {path}: {err}") from err
    return read_container(data, f"{path}:{member.name}")
