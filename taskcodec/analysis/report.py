"""``taskcodec analyze``: where the bits go, for image files, as bit maps and JSON (the command's work, no CLI)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from taskcodec.analysis.bits import jpeg_bit_map, learned_bit_maps, render_grid
from taskcodec.baselines import JPEG
from taskcodec.errors import ConfigError
from taskcodec.io import find_images, read_rgb, to_tensor


def analyze_images(inputs: list[str], model: str | None, jpeg_qualities: list[int], out: Path, grid: int,
                   max_pixels: int, bar) -> None:  # fmt: skip
    """Bit maps of an encoder and/or JPEG qualities for every image: ``out/bits.json`` and ``out/bitmaps.png``.

    ``bar`` is a tqdm-like progress bar (``reset(total)``, ``update(n)``); outputs are written atomically.
    """
    if not model and not jpeg_qualities:
        raise ConfigError("nothing to analyse: give an encoder (-m encoder-<id>.pt) and/or --jpeg-quality Q")
    if grid < 0:
        raise ConfigError(f"--grid must be >= 0, got {grid}")
    items = find_images(inputs)
    jpegs = [JPEG(q) for q in jpeg_qualities]
    encoder = label = None
    if model:
        from taskcodec.export import load_encoder

        encoder, meta = load_encoder(model)
        label = f"{meta['family']}-{meta['codec_id']}"
    out.mkdir(parents=True, exist_ok=True)
    rows, shown, maps = [], [], {}
    bar.reset(total=len(items))
    for path, name in items:
        image = read_rgb(path, max_pixels=max_pixels)
        found = {}
        if encoder is not None:
            x = to_tensor(image)[None]
            found[label] = (learned_bit_maps(encoder, x)[0], {"payload_bytes": len(encoder.compress(x)["payloads"][0])})
        for codec in jpegs:
            enc = codec.encode(image)
            found[f"jpeg-{codec.setting}"] = (jpeg_bit_map(enc.data), {"file_bytes": enc.file_bytes, "payload_bytes": enc.payload_bytes})
        rows.append({"name": name, "height": image.shape[0], "width": image.shape[1], "codecs": {
            k: {"total_bits": m.total_bits, "padding_bits": m.padding_bits, "parts": m.parts, **extra, "cells": m.cells}
            for k, (m, extra) in found.items()}})  # fmt: skip
        if len(shown) < grid:
            shown.append((image, name))
            for k, (m, _) in found.items():
                maps.setdefault(k, []).append(m.bits)
        bar.update(1)
    tmp = out / "bits.json.part"
    tmp.write_text(json.dumps({"encoder": model, "jpeg_qualities": jpeg_qualities, "images": rows}, indent=1))
    os.replace(tmp, out / "bits.json")
    if shown:
        render_grid([im for im, _ in shown], maps, out / "bitmaps.png.part", names=[n for _, n in shown])
        os.replace(out / "bitmaps.png.part", out / "bitmaps.png")
    print(f"{len(rows)} images -> {out}/bits.json" + (f", {out}/bitmaps.png ({len(shown)} shown)" if shown else ""))
