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
from taskcodec.bitstream import pack_record
from taskcodec.cost import client_macs, images_per_second, single_thread
from taskcodec.curves import binomial_stderr, bytes_at_accuracy, paired_difference
from taskcodec.io import to_tensor  # one conversion for one image or a batch (benches import it from here)
from taskcodec.label import LabelCodec
from taskcodec.models import TaskCodecBase
from taskcodec.provenance import write_json

COLUMNS = [
    "codec", "setting", "bytes_per_image", "payload_bytes_per_image", "est_bytes_per_image",
    "bpp", "top1", "top5", "top1_stderr", "n",
    "diff_vs_ref", "diff_se", "diff_ci95_lo", "diff_ci95_hi", "bytes_p50", "bytes_p99", "bytes_max",
    "client_macs", "client_macs_share", "client_encode_vs_jpeg",
]  # fmt: skip
#: client columns: MACs per image of what the client runs (taskcodec.cost.macs), their share of the
#: reference's, and its encode throughput over Pillow JPEG q=30's on the same images, one thread,
#: measured in the same run; empty for standard codecs (no network on the client)



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
    p50, p99, pmax = np.percentile(np.asarray(file_bytes, dtype=float), [50, 99, 100]).tolist()
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
        "bytes_p50": p50,
        "bytes_p99": p99,
        "bytes_max": pmax,
        "correct": (logits.argmax(1) == y).tolist(),  # per image, for paired comparisons
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
def code_and_classify(encoder: TaskCodecBase, decoder: TaskCodecBase, x: Tensor) -> dict:
    """The one real-coding measurement: compress -> records -> decode -> logits, on CPU.

    ``record_bytes`` count every byte a client sends per image (size byte + payload);
    ``payload_bytes`` the range-coded data alone; ``est_bits`` the entropy model's estimate from
    the same analysis pass.
    """
    comp = encoder.compress(x)
    records = [pack_record(*comp["image_size"], p) for p in comp["payloads"]]
    return {
        "records": records,
        "record_bytes": [len(r) for r in records],
        "payload_bytes": [len(p) for p in comp["payloads"]],
        "est_bits": comp["est_bits"],
        "logits": decoder.decode(records)["logits"],
    }


def codec_label(family: str, cfg: dict, meta: dict) -> tuple[str, str]:
    """(codec, setting) of a taskcodec row: ``taskcodec-<family>[-<client>][-<head or split>][-n<decoder width>][+kd][+2stage][+x<N>][+<augment policy>][+adapted[-linear][-kd]]``, ``lmbda=...``.

    ``cfg`` is the codec's config, ``meta`` its export's; ``+x<N>`` marks a client trained with the
    images of N extra classes (``data.extra_classes``), ``+trivialaugment`` one trained on
    ``data.augment_policy`` views.
    """
    variant = cfg.get("head") or (f"{cfg.get('split')}-{cfg.get('entropy')}" if "split" in cfg else "")
    if "channels" in cfg:  # the light family: name the client too (its size is the point)
        variant = f"{'x'.join(map(str, cfg['channels']))}k{cfg['kernel']}{cfg['act']}-{variant}"
        if cfg.get("N"):  # a decoder wider (or narrower) than the split stage: the server's size, same client
            variant += f"-n{cfg['N']}"
    name = f"taskcodec-{family}" + (f"-{variant}" if variant else "") + ("+kd" if meta.get("distill") else "")
    name += {"features": "+features", "two-stage": "+2stage"}.get(meta.get("recipe", ""), "")
    if meta.get("extra_classes"):
        name += f"+x{meta['extra_classes']}"
    if meta.get("augment_policy"):
        name += f"+{meta['augment_policy']}"
    if meta.get("adapted"):  # a server retrained for other classes on an unchanged client (distilling from a teacher: -kd)
        name += "+adapted" + ("-linear" if cfg.get("server") == "linear" else "")
        name += "-kd" if isinstance(meta["adapted"], dict) and meta["adapted"].get("distill") else ""
    return name, f"lmbda={meta.get('lmbda')}"


def evaluate_taskcodec(
    encoder: TaskCodecBase, decoder: TaskCodecBase, images: np.ndarray, labels: np.ndarray,
    batch_size: int = 250, meta: dict | None = None,
) -> dict:  # fmt: skip
    """Real bytes and top-1 of an exported encoder/decoder pair over uint8 images."""
    parts = [code_and_classify(encoder, decoder, to_tensor(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    codec, setting = codec_label(decoder.family, decoder.config, meta or {})
    return make_row(
        codec, setting, [b for p in parts for b in p["record_bytes"]], [b for p in parts for b in p["payload_bytes"]],
        torch.cat([p["logits"] for p in parts]), labels, images.shape[1] * images.shape[2],
        (torch.cat([p["est_bits"] for p in parts]) / 8).tolist(),
    )  # fmt: skip


def client_columns(encode, macs: int, reference_macs: int, speed_images: np.ndarray | None, jpeg_per_s: float | None) -> dict:
    """The client columns of a row; speed only when ``speed_images`` and JPEG's throughput on them are given."""
    out = {"client_macs": macs, "client_macs_share": macs / reference_macs}
    if speed_images is not None and jpeg_per_s:
        with single_thread():
            out["client_encode_vs_jpeg"] = images_per_second(encode, speed_images) / jpeg_per_s
    return out


def taskcodec_client_columns(encoder: TaskCodecBase, reference_macs: int, image_size: tuple[int, int], speed_images=None,
                             jpeg_per_s=None) -> dict:  # fmt: skip
    """The client columns of a taskcodec row; ``reference_macs`` must be counted at the same ``image_size``."""
    return client_columns(encoder.encode, client_macs(encoder, image_size), reference_macs, speed_images, jpeg_per_s)


@torch.no_grad()
def evaluate_label(
    classifier: nn.Module, images: np.ndarray, labels: np.ndarray, reference_macs: int, batch_size: int = 250,
    speed_images: np.ndarray | None = None, jpeg_per_s: float | None = None,
) -> dict:  # fmt: skip
    """The ``label`` row: the client runs the reference and sends its top-1 (:mod:`taskcodec.label`).

    Every record is decoded back and the decoded class is what is scored; top-5 is top-1 (one
    class is sent).
    """
    logits = classify(classifier, images, batch_size)
    num_classes = logits.shape[1]
    codec = LabelCodec(num_classes)
    size = tuple(images.shape[1:3])
    records = [codec.encode(int(k), size) for k in logits.argmax(1).tolist()]
    decoded = torch.tensor([codec.decode(r) for r in records])
    one_hot = torch.nn.functional.one_hot(decoded, num_classes).float()
    row = make_row("label", "top-1", [len(r) for r in records], [len(r) - 1 for r in records], one_hot, labels,
                   images.shape[1] * images.shape[2], [math.log2(num_classes) / 8] * len(records))  # fmt: skip
    row["top5"] = row["top1"]

    def client(x: Tensor) -> list[bytes]:
        return [codec.encode(int(k), size) for k in classifier(x).argmax(1).tolist()]

    return row | client_columns(client, reference_macs, reference_macs, speed_images, jpeg_per_s)


def add_paired(rows: list[dict]) -> None:
    """Each row's top-1 difference from the uncompressed reference on the same images, in place."""
    ref = next((r for r in rows if r["codec"] == "none" and r.get("correct") is not None), None)
    for r in rows:
        if ref is None or r.get("correct") is None or len(r["correct"]) != len(ref["correct"]):
            continue
        d = paired_difference(r["correct"], ref["correct"])
        r.update(diff_vs_ref=d["diff"], diff_se=d["se"], diff_ci95_lo=d["bootstrap_ci95"][0], diff_ci95_hi=d["bootstrap_ci95"][1])


def write_table(rows: list[dict], out_dir: str | Path, stem: str) -> tuple[Path, Path]:
    """The table as CSV and JSON (same rows, same column order)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / f"{stem}.csv", out / f"{stem}.json"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    write_json(json_path, [{k: r.get(k) for k in COLUMNS} for r in rows])
    per_image = {f"{r['codec']}|{r['setting']}": "".join("1" if c else "0" for c in r["correct"]) for r in rows if r.get("correct")}
    write_json(out / f"{stem}_per_image.json", per_image, indent=None)
    return csv_path, json_path


def read_per_image(out_dir: str | Path, stem: str = "rate_accuracy") -> dict[str, list[bool]]:
    """The per-image results :func:`write_table` wrote: ``"codec|setting"`` -> whether each image was right."""
    per_image = json.loads((Path(out_dir) / f"{stem}_per_image.json").read_text())
    return {key: [c == "1" for c in bits] for key, bits in per_image.items()}


PAIRED_KEYS = ("setting", "top1", "bytes_per_image", "est_bytes_per_image", "diff_vs_ref", "diff_se", "diff_ci95_lo",
               "diff_ci95_hi", "client_macs_share", "client_encode_vs_jpeg")  # fmt: skip
#: a client at most this share of the reference's MACs is "light" (headline.json: best_light_client)
LIGHT_CLIENT_SHARE = 0.10
STANDARD = (  # (key in the headline, codec rows compared against, size column)
    ("jpeg", "jpeg", "bytes_per_image"),
    ("jpeg_payload", "jpeg", "payload_bytes_per_image"),
    # the fair peer: JPEG whose classifier was fine-tuned on JPEG (bench/train_test_grid.py's rows,
    # joined with evaluate.py extra_rows), as a user wanting fewer bytes would also do
    ("jpeg_finetuned", "jpeg+finetuned", "bytes_per_image"),
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


def standard_parity(rows: list[dict], ref: dict, margin: float) -> dict:
    """Each standard codec's own parity point: its cheapest setting within ``margin`` of the reference.

    The done-when of a parity claim ("N times fewer bytes than JPEG files at parity") compares two
    parity points. The interpolated ``x_fewer_than_*`` at a point's exact top-1 can jump where a
    codec's curve is flat near the top (the cheapest JPEG within 0.2 pt may cost a fifth of the one
    that matches a point's top-1 exactly), so both are reported.
    """
    out: dict = {}
    for name, codec, key in STANDARD:
        ok = [r for r in rows if r["codec"] == codec and r.get(key) and _paired_diff(r, ref) >= -margin]
        if ok:
            r = min(ok, key=lambda r: r[key])
            out[name] = {"setting": r["setting"], "bytes": r[key], "diff_vs_ref": _paired_diff(r, ref)}
    return out


def _paired_diff(row: dict, ref: dict) -> float:
    d = row.get("diff_vs_ref")
    return d if d is not None and not (isinstance(d, float) and math.isnan(d)) else row["top1"] - ref["top1"]


def headline(rows: list[dict], margin: float = 0.01) -> dict:
    """How many times fewer bytes each taskcodec curve needs than the standard codecs.

    JPEG is compared twice: read by the clean-trained reference (``x_fewer_than_jpeg``) and by a
    classifier fine-tuned on JPEG at each quality (``x_fewer_than_jpeg_finetuned``, from
    ``jpeg+finetuned`` rows; ``None`` when the table has none).

    The parity point is the curve's cheapest measured setting whose *paired* top-1 difference from
    the reference (same images) is >= -``margin`` (the plain difference when no per-image results
    exist); ``noninferior`` says whether the bootstrap 95% interval's lower end is above it too;
    each standard codec's bytes at that point's top-1 come from its Pareto frontier, interpolated
    in log-bytes and never extrapolated (``None``: that codec never reaches the accuracy).
    ``points`` gives the same comparison at every measured setting, parity or not.
    ``standard_parity`` holds each standard codec's own parity point, and a parity entry's
    ``x_fewer_than_<codec>_at_parity`` compares the two parity points' bytes.
    """
    ref = next((r for r in rows if r["codec"] == "none"), None)
    if ref is None:
        return {}
    parity = standard_parity(rows, ref, margin)
    result: dict = {"reference_top1": ref["top1"], "margin": margin, "standard_parity": parity}
    for head in sorted({r["codec"] for r in rows if r["codec"].startswith("taskcodec-")}):
        mine = sorted((r for r in rows if r["codec"] == head), key=lambda r: r["bytes_per_image"])
        points = [
            {k: r.get(k) for k in PAIRED_KEYS} | compare_to_standard(r, rows) for r in mine
        ]
        ok = [r for r in mine if _paired_diff(r, ref) >= -margin]
        entry: dict = {"reaches_parity": bool(ok)}
        if ok:
            p = ok[0]
            entry |= {k: p.get(k) for k in PAIRED_KEYS}
            entry["noninferior"] = p.get("diff_ci95_lo") is not None and p["diff_ci95_lo"] >= -margin
            entry |= compare_to_standard(p, rows) | against_label(p, rows)
            entry |= {f"x_fewer_than_{n}_at_parity": v["bytes"] / p["bytes_per_image"] for n, v in parity.items()}
        elif any(r["codec"] == "label" for r in rows):  # short of parity: the label row has the reference's top-1
            entry |= {"beats_label": False, "label_note": "not at parity: the label row keeps the reference's top-1"}
        result[head] = entry | {"points": points}
    light = [(h, e) for h, e in result.items() if isinstance(e, dict) and e.get("reaches_parity")
             and (e.get("client_macs_share") or math.inf) <= LIGHT_CLIENT_SHARE]  # fmt: skip
    if light:
        name, best = min(light, key=lambda he: he[1]["bytes_per_image"])
        result["best_light_client"] = {"codec": name, "max_client_macs_share": LIGHT_CLIENT_SHARE} | {
            k: v for k, v in best.items() if k != "points"
        }
    else:
        result["best_light_client"] = None
    return result


def against_label(point: dict, rows: list[dict]) -> dict:
    """Whether a parity point beats the ``label`` row (the client runs the reference and sends its answer).

    At parity, it beats the label row only by sending fewer bytes or by running a lighter client; a
    client that runs the whole classifier and sends more bytes than the label does not.
    """
    label = next((r for r in rows if r["codec"] == "label"), None)
    if label is None:
        return {}
    share = point.get("client_macs_share")
    fewer = point["bytes_per_image"] < label["bytes_per_image"]
    lighter = share is not None and not math.isnan(share) and share < (label.get("client_macs_share") or 1.0)
    return {"label_bytes": label["bytes_per_image"], "fewer_bytes_than_label": fewer,
            "lighter_client_than_label": lighter, "beats_label": fewer or lighter}  # fmt: skip


def plot_rate_accuracy(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Top-1 against whole-file bytes per image (log x), one line per codec, ±1 s.e. bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    codecs = [c for c in dict.fromkeys(r["codec"] for r in rows) if c != "none"]
    colours = plt.get_cmap("tab20" if len(codecs) > 10 else "tab10")
    colour = {c: colours(i % colours.N) for i, c in enumerate(codecs)}
    for codec in ["none", *codecs]:
        pts = sorted((r for r in rows if r["codec"] == codec), key=lambda r: r["bytes_per_image"])
        if not pts:
            continue
        xs, ys, es = ([r[k] for r in pts] for k in ("bytes_per_image", "top1", "top1_stderr"))
        if codec == "none":
            ax.axhline(ys[0], color="k", ls="--", lw=1, label=f"uncompressed ({xs[0]:.0f} B)")
            ax.axhspan(ys[0] - 0.01, ys[0], color="k", alpha=0.07, lw=0)
            continue
        # learned codecs solid with dots, standard codecs dashed with squares, each its own colour
        learned = codec.startswith("taskcodec")
        ax.errorbar(xs, ys, yerr=es, marker="o" if learned else "s", ms=4, capsize=2, label=codec,
                    ls="-" if learned else "--", color=colour[codec])  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("bytes per image (whole file, mean)")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_client_frontier(rows: list[dict], path: str | Path, margin: float = 0.01, title: str = "") -> Path | None:
    """Bytes at parity against the client's share of the reference's MACs: the light-client frontier.

    One marker per learned curve at its cheapest parity point (filled), or at its most accurate
    point when it never reaches parity (hollow, labelled with its paired difference); the
    ``label`` row at its client cost; JPEG at parity as a horizontal line (its client runs no
    network). Returns ``None`` when no row has client columns.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = next((r for r in rows if r["codec"] == "none"), None)
    # stage-1-only rows (+features) are a step of the two-stage recipe, not a server one deploys: left out
    learned = [c for c in dict.fromkeys(r["codec"] for r in rows) if c.startswith("taskcodec-") and not c.endswith("+features")]
    points = []
    for codec in learned:
        mine = sorted((r for r in rows if r["codec"] == codec and r.get("client_macs_share") is not None),
                      key=lambda r: r["bytes_per_image"])  # fmt: skip
        if not mine or ref is None:
            continue
        ok = [r for r in mine if _paired_diff(r, ref) >= -margin]
        best = ok[0] if ok else max(mine, key=lambda r: r["top1"])
        points.append((codec, best, bool(ok), _paired_diff(best, ref)))
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for k, (codec, r, parity, diff) in enumerate(points):
        x = 100 * r["client_macs_share"]
        ax.scatter(x, r["bytes_per_image"], s=40, facecolors="C0" if parity else "none", edgecolors="C0")
        ax.annotate(f"{codec.removeprefix('taskcodec-')} {r['setting']} ({100 * diff:+.1f} pt)", (x, r["bytes_per_image"]),
                    fontsize=6, xytext=(4, 3 - 9 * (k % 2)), textcoords="offset points")  # fmt: skip
    label = next((r for r in rows if r["codec"] == "label"), None)
    if label is not None:
        ax.scatter(100 * (label.get("client_macs_share") or 1.0), label["bytes_per_image"], marker="*", s=120, color="C3",
                   label=f"label row (client runs the reference, sends its answer): {label['bytes_per_image']:.1f} B")  # fmt: skip
    jpeg = [(r["bytes_per_image"], r["top1"]) for r in rows if r["codec"] == "jpeg"]
    jpeg_parity = bytes_at_accuracy(jpeg, ref["top1"] - margin, strict=True) if jpeg and ref else None
    if jpeg_parity:
        ax.axhline(jpeg_parity, color="C1", ls="--", lw=1, label=f"JPEG at parity: {jpeg_parity:.0f} B (no network on the client)")
        ax.axhline(jpeg_parity / 30, color="C1", ls=":", lw=1, label="30x fewer than JPEG")
    ax.axvline(100 * LIGHT_CLIENT_SHARE, color="k", ls=":", lw=1, label=f"light client: <= {100 * LIGHT_CLIENT_SHARE:.0f}% of the MACs")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("client MACs, % of the reference classifier's (log)")
    ax.set_ylabel("bytes per image (log)")
    ax.set_title(f"{title}; filled: cheapest point at paired parity, hollow: best point, short of parity".strip("; "), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
