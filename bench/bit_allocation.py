"""Where do the bits go? Share of each codec's bits inside the object box, against the box's area.

    python bench/bit_allocation.py --encoder ENCODER.pt [--encoder ...] [--jpeg-qualities 10 30 90] \\
        [--out results/bit_allocation_10cls]

On the official-val images of the first ``--num-classes`` classes of tiny-imagenet-100 (each has
one object box), for every learned encoder and every JPEG quality: the per-pixel bit map
(:mod:`taskcodec.analysis.bits`), the share of the image's bits inside the box and the box's
share of the area, and their ratio with a bootstrap 95% interval over images (ratio > 1: the codec
spends more than its area's share of bits on the object). Learned maps are checked against the
entropy model's estimate from ``compress``; JPEG maps against the scan's real payload bytes.

Writes ``bit_allocation.json`` (stats, checks, per-image shares), ``bitmap_grid.png`` and
``provenance.json`` (command, git revision, dirty flag).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datamodules.tiny_imagenet import TinyImageNetDataModule  # noqa: E402
from taskcodec.analysis.bits import (  # noqa: E402
    box_share,
    box_share_stats,
    jpeg_bit_map,
    jpeg_block_bits,
    learned_bit_maps,
    render_grid,
)
from taskcodec.baselines import JPEG  # noqa: E402
from taskcodec.evaluation import to_tensor  # noqa: E402
from taskcodec.export import load_encoder  # noqa: E402
from taskcodec.provenance import bench_parser, start_bench, write_json, write_provenance  # noqa: E402


def shares(maps, boxes) -> dict:
    """Per stream ("all" and each part), the images' bit shares inside the box."""
    out: dict[str, list[float]] = {"all": [box_share(m.bits, b)[0] for m, b in zip(maps, boxes, strict=True)]}
    for name in maps[0].streams:
        out[name] = [box_share(m.streams[name], b)[0] for m, b in zip(maps, boxes, strict=True)]
    return out


def grid_oracle(boxes, shape: tuple[int, int], cell: int) -> dict:
    """Control: the box-share stats of a map whose cells hold bits in proportion to their box pixels.

    What a codec with this grid could show at most if it spent bits only where the object is (a
    coarse grid cannot put bits inside the box without putting some outside it too).
    """
    bit_shares, area = [], []
    for b in boxes:
        ind = np.zeros(shape)
        x0, y0, x1, y1 = (int(round(float(v))) for v in b)
        ind[y0 : y1 + 1, x0 : x1 + 1] = 1
        h, w = shape[0] // cell, shape[1] // cell
        per_cell = ind.reshape(h, cell, w, cell).sum((1, 3))
        spread = np.repeat(np.repeat(per_cell, cell, 0), cell, 1)
        share, a = box_share(spread, b)
        bit_shares.append(share)
        area.append(a)
    return box_share_stats(bit_shares, area)


def learned(path: str, images: np.ndarray, batch: int) -> tuple[str, list, dict]:
    encoder, meta = load_encoder(path)
    cfg = encoder.config
    label = f"{meta['family']}-{cfg.get('split', cfg.get('head', ''))}-{cfg.get('entropy', '')}-lmbda={meta.get('lmbda')}"
    maps, gaps, payload = [], [], []
    t = time.perf_counter()
    for i in range(0, len(images), batch):
        x = to_tensor(images[i : i + batch])
        part = learned_bit_maps(encoder, x)
        comp = encoder.compress(x)
        gaps += [abs(m.total_bits - float(e)) for m, e in zip(part, comp["est_bits"], strict=True)]
        payload += [len(p) for p in comp["payloads"]]
        maps += part
    check = {
        "max_abs_gap_total_vs_compress_est_bits": max(gaps),
        "max_padding_bits": max(m.padding_bits for m in maps),
        "mean_est_bits": float(np.mean([m.total_bits for m in maps])),
        "mean_payload_bytes": float(np.mean(payload)),
        "grid": {k: [len(v), len(v[0])] for k, v in maps[0].cells.items()},
        "seconds": time.perf_counter() - t,
    }
    return (
        label,
        maps,
        {"encoder": path, "codec_id": meta["codec_id"], "config": cfg, "lmbda": meta.get("lmbda"), **check},
    )


def jpeg(q: int, images: np.ndarray) -> tuple[str, list, dict]:
    codec = JPEG(q)
    maps, exact, payload = [], 0, []
    t = time.perf_counter()
    for im in images:
        enc = codec.encode(im)
        m = jpeg_bit_map(enc.data)
        maps.append(m)
        payload.append(enc.payload_bytes)
        jb = jpeg_block_bits(enc.data)  # exact reconciliation with the scan's real bytes
        exact += int(
            jb.block_bits + jb.padding_bits + 8 * (jb.stuffed_bytes + jb.marker_bytes)
            == 8 * enc.payload_bytes
        )
    block_bytes = [m.total_bits / 8 for m in maps]
    check = {
        "mean_payload_bytes": float(np.mean(payload)),
        "mean_block_bits_over_8": float(np.mean(block_bytes)),
        "block_bits_share_of_payload": float(np.sum(block_bytes) / np.sum(payload)),
        "images_block_bits_plus_padding_and_stuffing_equal_payload": exact,
        "seconds": time.perf_counter() - t,
    }
    return f"jpeg-q={q}", maps, {"quality": q, **check}


def main() -> None:
    ap = bench_parser(__doc__, out="results/bit_allocation_10cls")
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--encoder", action="append", default=[], help="encoder-<id>.pt (repeatable)")
    ap.add_argument("--jpeg-qualities", type=int, nargs="*", default=[10, 30, 90])
    ap.add_argument("--grid-images", type=int, default=6)
    ap.add_argument("--batch", type=int, default=100)
    args = ap.parse_args()
    start_bench(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    dm = TinyImageNetDataModule(root=args.data, num_classes=args.num_classes, return_boxes=False)
    dm.setup("test")
    images, boxes = dm.test_set.images, dm.test_set.boxes
    area = [box_share(np.ones(images.shape[1:3]), b)[1] for b in boxes]
    print(
        f"{len(images)} images; mean box area share {np.mean(area):.3f}; full-image boxes {int(np.sum(np.asarray(area) >= 1))}"
    )

    results, grid_maps = {}, {}
    runs = [lambda p=p: learned(p, images, args.batch) for p in args.encoder]
    runs += [lambda q=q: jpeg(q, images) for q in args.jpeg_qualities]
    for run in runs:
        label, maps, info = run()
        per_stream = shares(maps, boxes)
        stats = {name: box_share_stats(s, area) for name, s in per_stream.items()}
        results[label] = {
            **info,
            "box_stats": stats,
            "bit_share_in_box": [round(v, 5) for v in per_stream["all"]],
        }
        grid_maps[label] = [m.bits for m in maps[: args.grid_images]]
        cell = images.shape[1] // (len(maps[0].cells["y"]) if "y" in maps[0].cells else 8)
        stats[f"control_box_proportional_{cell}px_cells"] = grid_oracle(boxes, images.shape[1:3], cell)
        s = stats["all"]
        print(f"{label}: ratio_of_means {s['ratio_of_means']:.3f} {np.round(s['ratio_of_means_ci95'], 3).tolist()}, "
              f"mean_ratio {s['mean_ratio']:.3f} {np.round(s['mean_ratio_ci95'], 3).tolist()}  ({info['seconds']:.1f} s)",
              flush=True)  # fmt: skip

    k = args.grid_images
    render_grid(
        list(images[:k]),
        grid_maps,
        out / "bitmap_grid.png",
        boxes=boxes[:k],
        names=[f"val {i}" for i in range(k)],
    )
    summary = {"n_images": len(images), "mean_box_area_share": float(np.mean(area)),
               "box_area_share": [round(a, 5) for a in area], "codecs": results}  # fmt: skip
    write_json(out / "bit_allocation.json", summary)
    write_provenance(out / "provenance.json", torch_threads=torch.get_num_threads(), data=args.data,
                     num_classes=args.num_classes)  # fmt: skip
    print(f"wrote {out}/bit_allocation.json, bitmap_grid.png, provenance.json")


if __name__ == "__main__":
    main()
