"""Rate-accuracy rows: real bytes from real encoders, then classify what the receiver decodes.

Every row of the table has the same columns (:data:`COLUMNS`), whether it comes from a standard
codec or from taskcodec. Sizes are means over the evaluated images of whole-file bytes (the
headline) and payload bytes (coded data without container headers and tables).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from taskcodec.baselines import Codec
from taskcodec.bitstream import pack_batch
from taskcodec.curves import binomial_stderr, bytes_at_accuracy
from taskcodec.models import TaskCodec

COLUMNS = [
    "codec", "setting", "bytes_per_image", "payload_bytes_per_image", "est_bytes_per_image",
    "bpp", "top1", "top5", "top1_stderr", "n",
]  # fmt: skip


def to_tensor(images: np.ndarray) -> Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)


@torch.no_grad()
def classify(classifier: nn.Module, images: np.ndarray, batch_size: int = 250) -> Tensor:
    """Logits of an RGB-in-[0,1] classifier over uint8 images, in batches, on the classifier's device."""
    classifier.eval()
    device = next(classifier.parameters()).device
    out = [classifier(to_tensor(images[i : i + batch_size]).to(device)).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def make_row(
    codec: str,
    setting: str,
    file_bytes: Sequence[int],
    payload_bytes: Sequence[int],
    logits: Tensor,
    labels: np.ndarray,
    pixels_per_image: int,
    est_bytes: Sequence[float] | None = None,
) -> dict:
    """One table row; top-1 standard error is the binomial one, sqrt(p(1-p)/n)."""
    y = torch.as_tensor(labels)
    n = len(y)
    top1 = (logits.argmax(1) == y).float().mean().item()
    k = min(5, logits.shape[1])
    top5 = (logits.topk(k, dim=1).indices == y[:, None]).any(1).float().mean().item()
    mean_bytes = float(np.mean(file_bytes))
    return {
        "codec": codec,
        "setting": setting,
        "bytes_per_image": mean_bytes,
        "payload_bytes_per_image": float(np.mean(payload_bytes)),
        "est_bytes_per_image": float(np.mean(est_bytes)) if est_bytes is not None else math.nan,
        "bpp": mean_bytes * 8 / pixels_per_image,
        "top1": top1,
        "top5": top5,
        "top1_stderr": binomial_stderr(top1, n),
        "n": n,
    }


def evaluate_baseline(
    codec: Codec, classifier: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 250
) -> dict:
    """Encode every image with a real encoder, decode it, classify the decoded pixels."""
    encoded = [codec.encode(im) for im in images]
    decoded = np.stack([e.decoded for e in encoded])
    logits = classify(classifier, decoded, batch_size)
    return make_row(
        codec.name, codec.setting, [e.file_bytes for e in encoded], [e.payload_bytes for e in encoded],
        logits, labels, images.shape[1] * images.shape[2],
    )  # fmt: skip


@torch.no_grad()
def evaluate_taskcodec(
    encoder: TaskCodec, decoder: TaskCodec, images: np.ndarray, labels: np.ndarray, batch_size: int = 250
) -> dict:
    """compress -> bytes -> decompress -> classify, with the exported encoder and decoder (CPU).

    ``bytes_per_image`` is the packed stream (header included); ``payload_bytes_per_image`` is
    the y and z strings alone; ``est_bytes_per_image`` is the entropy model's estimate.
    """
    streams: list[bytes] = []
    payload: list[int] = []
    est: list[float] = []
    logits = []
    for i in range(0, len(images), batch_size):
        x = to_tensor(images[i : i + batch_size])
        comp = encoder.compress(x)
        batch_streams = pack_batch(comp)
        payload += [len(y) + len(z) for y, z in zip(*comp["strings"], strict=True)]
        est += (encoder.code_latents(x)["rate_bits"] / 8).tolist()
        streams += batch_streams
        logits.append(decoder.decode(batch_streams)["logits"])
    return make_row(
        f"taskcodec-{decoder.config.head}", "", [len(s) for s in streams], payload,
        torch.cat(logits), labels, images.shape[1] * images.shape[2], est,
    )  # fmt: skip


def write_table(rows: list[dict], out_dir: str | Path, stem: str) -> tuple[Path, Path]:
    """The table as CSV and JSON (same rows, same column order)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / f"{stem}.csv", out / f"{stem}.json"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    json_path.write_text(json.dumps([{k: r.get(k) for k in COLUMNS} for r in rows], indent=1))
    return csv_path, json_path


STANDARD = (
    ("jpeg", "jpeg", "bytes_per_image"),
    ("jpeg_payload", "jpeg", "payload_bytes_per_image"),
    ("webp", "webp", "bytes_per_image"),
    ("avif", "avif", "bytes_per_image"),
)


def compare_to_standard(point: dict, rows: list[dict]) -> dict:
    """Each standard codec's bytes at ``point``'s top-1 and how many times more that is.

    Interpolated on the codec's Pareto frontier in log-bytes. ``None`` outside the measured range:
    above the codec's best top-1, and below its cheapest setting's top-1 too (there the cheapest
    setting's bytes would only be an upper bound, which would overstate the saving).
    """
    entry: dict = {}
    for name, codec, key in STANDARD:
        pts = [(r[key], r["top1"]) for r in rows if r["codec"] == codec]
        b = bytes_at_accuracy(pts, point["top1"], strict=True) if pts else None
        entry[f"{name}_bytes"] = b
        entry[f"x_fewer_than_{name}"] = b / point["bytes_per_image"] if b else None
    others = [entry[f"{n}_bytes"] for n in ("webp", "avif") if entry.get(f"{n}_bytes")]
    entry["x_fewer_than_best_webp_avif"] = min(others) / point["bytes_per_image"] if others else None
    return entry


def headline(rows: list[dict], margin: float = 0.01) -> dict:
    """How many times fewer bytes each taskcodec curve needs than the standard codecs.

    The parity point is the curve's cheapest measured setting with top-1 >= reference - ``margin``;
    each standard codec's bytes at that point's top-1 come from its Pareto frontier, interpolated
    in log-bytes and never extrapolated (``None``: that codec never reaches the accuracy).
    ``points`` gives the same comparison at every measured setting, parity or not.
    """
    ref = next((r for r in rows if r["codec"] == "none"), None)
    if ref is None:
        return {}
    result: dict = {"reference_top1": ref["top1"], "margin": margin}
    for head in sorted({r["codec"] for r in rows if r["codec"].startswith("taskcodec-")}):
        mine = sorted((r for r in rows if r["codec"] == head), key=lambda r: r["bytes_per_image"])
        points = [
            {k: r[k] for k in ("setting", "top1", "bytes_per_image")} | compare_to_standard(r, rows) for r in mine
        ]
        ok = [r for r in mine if r["top1"] >= ref["top1"] - margin]
        entry: dict = {"reaches_parity": bool(ok)}
        if ok:
            p = ok[0]
            entry |= {"setting": p["setting"], "top1": p["top1"], "bytes_per_image": p["bytes_per_image"]}
            entry |= compare_to_standard(p, rows)
        result[head] = entry | {"points": points}
    return result


def plot_rate_accuracy(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Top-1 against whole-file bytes per image (log x), one line per codec, ±1 s.e. bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for codec in dict.fromkeys(r["codec"] for r in rows):
        pts = sorted((r for r in rows if r["codec"] == codec), key=lambda r: r["bytes_per_image"])
        xs, ys, es = ([r[k] for r in pts] for k in ("bytes_per_image", "top1", "top1_stderr"))
        if codec == "none":
            ax.axhline(ys[0], color="k", ls="--", lw=1, label=f"uncompressed ({xs[0]:.0f} B)")
            ax.axhspan(ys[0] - 0.01, ys[0], color="k", alpha=0.07, lw=0)
            continue
        ax.errorbar(xs, ys, yerr=es, marker="o", ms=4, capsize=2, label=codec)
    ax.set_xscale("log")
    ax.set_xlabel("bytes per image (whole file, mean)")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
