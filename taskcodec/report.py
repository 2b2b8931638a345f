"""What the CLI prints: classification rows (text, JSON, CSV) and ``taskcodec info`` descriptions."""

from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path
from typing import TextIO

import numpy as np

from taskcodec.bitstream import unpack_record
from taskcodec.container import Container, looks_like_container, read_container_file
from taskcodec.errors import TaskcodecError


def class_label(meta: dict, k: int) -> tuple[str, str]:
    """(class name, human words) of class ``k``; the index itself when the export has no names."""
    names, words = meta.get("class_names") or [], meta.get("class_words") or []
    name = str(names[k]) if k < len(names) else str(k)
    return name, str(words[k]) if k < len(words) else name


def softmax_topk(logits, topk: int) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities, class indexes)`` of the ``topk`` best classes per row, best first (float64 softmax)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    idx = np.argsort(-p, axis=1, kind="stable")[:, :topk]
    return np.take_along_axis(p, idx, axis=1), idx


def label_rows(rows: list[dict], logits, meta: dict, topk: int) -> list[dict]:
    """Add the ``topk`` classes (index, name, words, probability) to each row, best first.

    ``logits`` is a CPU tensor or a numpy array: the torch-free server labels with this too.
    """
    topk = max(1, min(topk, logits.shape[1]))
    probs, idx = softmax_topk(logits, topk)
    for row, p, i in zip(rows, probs.tolist(), idx.tolist(), strict=True):
        row["top"] = [
            {"class": k, "name": class_label(meta, k)[0], "words": class_label(meta, k)[1], "probability": round(q, 6)}
            for k, q in zip(i, p, strict=True)
        ]
    return rows


def write_rows(rows: list[dict], fmt: str, out: TextIO) -> None:
    """``text``: one line per image; ``json``: one list; ``csv``: one line per image and rank."""
    if fmt == "json":
        json.dump(rows, out, indent=1)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(["file", "index", "name", "label", "rank", "class", "class_name", "class_words", "probability"])
        for r in rows:
            for rank, t in enumerate(r["top"], start=1):
                writer.writerow([r["file"], r["index"], r["name"] or "", "" if r["label"] is None else r["label"],
                                 rank, t["class"], t["name"], t["words"], t["probability"]])  # fmt: skip
    else:
        for r in rows:
            where = r["file"] + (f"#{r['index']}" if r["name"] is None and r["index"] else "")
            where += f" {r['name']}" if r["name"] else ""
            top = ", ".join(f"{t['words']} ({t['name']}) {t['probability']:.3f}" for t in r["top"])
            out.write(f"{where}: {top}\n")


def describe_container(c: Container, where: str) -> str:
    """Header fields, sizes and the model id of a container."""
    sizes = [len(e.record) for e in c.entries]
    shapes = sorted({"{}x{}".format(*unpack_record(e.record)[:2]) for e in c.entries})
    labels = sum(e.label is not None for e in c.entries)
    lines = [
        f"{where}: taskcodec container v{c.version}, model id {c.codec_id}",
        f"  records: {len(sizes)} ({labels} labelled, {sum(e.name is not None for e in c.entries)} named), image sizes {', '.join(shapes)}",
        f"  bytes: {c.total_bytes} total, records {sum(sizes)} (min {min(sizes, default=0)}, "
        f"mean {sum(sizes) / max(1, len(sizes)):.1f}, max {max(sizes, default=0)}), framing {c.total_bytes - sum(sizes)}",
    ]
    return "\n".join(lines)


def describe(path_str: str) -> str:
    """``taskcodec info``: a container file, a pack folder, a shard, or an exported model file."""
    from taskcodec.pack import MANIFEST, read_manifest, read_shard

    path = Path(path_str)
    if path.is_dir() and (path / MANIFEST).exists():
        m = read_manifest(path)
        return (f"{path}: taskcodec pack v{m['version']}, model id {m['codec_id']} ({m['family']}), "
                f"{m['count']} images of {m['split']} in {m['num_shards']} shards of {m['shard_size']}, "
                f"{len(m['class_names'])} classes, {'complete' if m['complete'] else 'INCOMPLETE: re-run pack'}")  # fmt: skip
    try:
        with open(path, "rb") as f:
            prefix = f.read(8)
    except OSError as err:
        raise TaskcodecError(f"cannot read {path}: {err.strerror or err}") from err
    if looks_like_container(prefix):
        return describe_container(read_container_file(path), str(path))
    if path.suffix == ".tar" and tarfile.is_tarfile(path):
        return describe_container(read_shard(path), str(path))
    from taskcodec.models import read_checkpoint

    blob = read_checkpoint(str(path))
    if not isinstance(blob, dict) or "kind" not in blob or "state_dict" not in blob:
        raise TaskcodecError(f"{path} is not a taskcodec container, pack, shard or export")
    from taskcodec.preprocessing import describe_preprocessing

    n = sum(v.numel() for v in blob["state_dict"].values())
    meta = {k: v for k, v in blob["meta"].items() if k != "preprocessing"}
    return (f"{blob['kind']} v{blob['version']} id={blob['codec_id']} params={n} "
            f"config={blob['config']} meta={meta}\n{describe_preprocessing(blob['meta'])}")  # fmt: skip
