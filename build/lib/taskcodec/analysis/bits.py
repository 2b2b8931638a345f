"""Where the bits go: per-pixel bit maps of learned codecs and of JPEG, and their share inside boxes.

A :class:`BitMap` spreads each coded unit's bits evenly over the pixels that unit covers, so the
map sums to the unit's bits and ``map[box].sum() / map.sum()`` is the share of bits spent on a box.

* **Learned codecs** (any registered family, through :class:`TaskCodecBase` only): the entropy
  stage's likelihoods of ``y`` and, for the hyperprior, of ``z``. A latent position's bits are
  ``-log2`` of its likelihoods summed over channels, spread over its ``stride x stride`` pixel
  block (nearest upsampling: no bits move between blocks). ``z`` is spread the same way over its own
  coarser grid and added; its total is also reported on its own (``parts["z"]``). The map sums to
  the entropy model's estimate (what ``compress`` returns as ``est_bits``) minus the bits of cells
  that fall on the replicate padding (``padding_bits``; zero when the size is a multiple of the
  codec's stride).
* **JPEG**: real bits per 8x8 block, read from the file's own Huffman-coded scan by
  :func:`jpeg_block_bits` (a baseline Huffman parser that walks the codes of every block and records
  where each block starts and ends). A luma block's bits cover its 8x8 pixels; a 4:2:0 chroma
  block's cover its 16x16. Nothing is estimated: block bits + end/restart padding + 8 x (stuffed
  ``00`` bytes + RST marker bytes) equals 8 x the scan's payload bytes exactly.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

from taskcodec.errors import CodecError, ConfigError


@dataclass
class BitMap:
    """Bits per pixel of one coded image (``bits.sum() + padding_bits == total_bits``)."""

    bits: np.ndarray  # float64 [H, W]
    total_bits: float
    padding_bits: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)  # bits per stream: y/z, or Y/Cb/Cr
    cells: dict[str, list] = field(default_factory=dict)  # bits per coded unit, per stream (grids)
    streams: dict[str, np.ndarray] = field(default_factory=dict)  # each stream's own [H, W] map


def _spread(cell_bits: np.ndarray, cy: int, cx: int) -> np.ndarray:
    """Each cell's bits spread evenly over its ``cy x cx`` pixels."""
    return np.repeat(np.repeat(cell_bits / (cy * cx), cy, axis=0), cx, axis=1)


# --------------------------------------------------------------------------- learned codecs


def learned_bit_maps(codec, x) -> list[BitMap]:
    """Bit maps of a batch of same-size images ``x`` (float [B, 3, H, W] in [0, 1]) for any codec family.

    Uses only the family API every codec has (``_pad``, ``analysis``, ``entropy``), so an encoder
    file from ``taskcodec export`` is enough. The codec must be in eval mode (real rounding).
    """
    import torch

    if codec.training:
        raise ConfigError("call .eval() on the codec first: bit maps use real rounding, not training noise")
    h, w = x.shape[-2:]
    with torch.no_grad():
        xp = codec._pad(x)
        _, likelihoods = codec.entropy(codec.analysis(xp))
    hp, wp = xp.shape[-2:]
    maps = [np.zeros((hp, wp)) for _ in range(len(x))]
    parts: list[dict[str, float]] = [{} for _ in range(len(x))]
    cells: list[dict[str, list]] = [{} for _ in range(len(x))]
    streams: list[dict[str, np.ndarray]] = [{} for _ in range(len(x))]
    for name, lik in likelihoods.items():
        per_pos = (-torch.log2(lik.double())).sum(1).numpy()  # [B, h', w']: bits per latent position
        gh, gw = per_pos.shape[-2:]
        if hp % gh or wp % gw:
            raise ConfigError(f"latent {name!r} grid {gh}x{gw} does not tile the padded image {hp}x{wp}")
        for i in range(len(x)):
            spread = _spread(per_pos[i], hp // gh, wp // gw)
            maps[i] += spread
            streams[i][name] = spread[:h, :w]
            parts[i][name] = float(per_pos[i].sum())
            cells[i][name] = per_pos[i].round(3).tolist()
    out = []
    for m, p, c, st in zip(maps, parts, cells, streams, strict=True):
        total = float(sum(p.values()))
        cropped = m[:h, :w]
        out.append(BitMap(cropped, total, total - float(cropped.sum()), p, c, st))
    return out


# --------------------------------------------------------------------------- JPEG


@dataclass
class JpegBits:
    """Real bits of every block of a baseline JPEG, and how they add up to the scan's bytes."""

    width: int
    height: int
    components: list[dict]  # id, h, v, name, blocks (float [rows, cols] bits per block)
    mcu_size: tuple[int, int]  # (rows, cols) of pixels per MCU (8x8 for a single-component scan)
    padding_bits: int  # 1-bits filling the last byte (and bytes before each RST marker)
    stuffed_bytes: int  # 00 bytes after FF in the scan
    marker_bytes: int  # RSTn markers inside the scan
    scan_bytes: int  # what taskcodec.baselines.jpeg_payload_bytes counts

    @property
    def block_bits(self) -> int:
        return int(sum(c["blocks"].sum() for c in self.components))


def _segments(data: bytes):
    """(marker, segment body, offset after the segment) for every segment up to and including SOS."""
    if data[:2] != b"\xff\xd8":
        raise CodecError("not a JPEG: no SOI marker (FF D8) at the start")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise CodecError(f"malformed JPEG: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        body = data[pos + 4 : pos + 2 + length]
        pos += 2 + length
        yield marker, body, pos
        if marker == 0xDA:
            return
    raise CodecError("malformed JPEG: no SOS (start of scan) segment")


def _huffman(body: bytes, tables: dict) -> None:
    pos = 0
    while pos < len(body):
        tc_th = body[pos]
        counts = body[pos + 1 : pos + 17]
        symbols = body[pos + 17 : pos + 17 + sum(counts)]
        table, code, k = {}, 0, 0
        for length, count in enumerate(counts, start=1):
            for _ in range(count):
                table[(length, code)] = symbols[k]
                code, k = code + 1, k + 1
            code <<= 1
        tables[(tc_th >> 4, tc_th & 15)] = table
        pos += 17 + sum(counts)


def _scan_bits(data: bytes, start: int) -> tuple[str, list[int], int, int, int]:
    """Unstuffed scan bits as a '0'/'1' string, bit offsets of RST markers, stuffed/marker bytes, scan end."""
    out, restarts, stuffed, markers, pos = bytearray(), [], 0, 0, start
    while pos < len(data):
        b = data[pos]
        if b != 0xFF:
            out.append(b)
            pos += 1
            continue
        nxt = data[pos + 1] if pos + 1 < len(data) else 0xD9
        if nxt == 0x00:
            out.append(0xFF)
            stuffed, pos = stuffed + 1, pos + 2
        elif 0xD0 <= nxt <= 0xD7:
            restarts.append(8 * len(out))
            markers, pos = markers + 2, pos + 2
        elif nxt == 0xFF:
            pos += 1
        else:
            break
    return "".join(f"{b:08b}" for b in out), restarts, stuffed, markers, pos - start


def jpeg_block_bits(data: bytes) -> JpegBits:
    """Parse a baseline (sequential, Huffman) JPEG's single scan and count the bits of each block.

    Raises:
        CodecError: for progressive, arithmetic-coded or multi-scan files, or a corrupt scan.
    """
    tables: dict = {}
    frame, restart_interval, scan = None, 0, None
    for marker, body, end in _segments(data):
        if marker in (0xC0, 0xC1):
            _, height, width, n = struct.unpack(">BHHB", body[:6])
            frame = {
                "height": height,
                "width": width,
                "comps": [
                    {"id": body[6 + 3 * i], "h": body[7 + 3 * i] >> 4, "v": body[7 + 3 * i] & 15}
                    for i in range(n)
                ],
            }
        elif 0xC2 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            raise CodecError(
                f"JPEG SOF{marker - 0xC0} (progressive/lossless/arithmetic) is not supported; "
                "only baseline sequential Huffman JPEGs can be parsed"
            )
        elif marker == 0xC4:
            _huffman(body, tables)
        elif marker == 0xDD:
            (restart_interval,) = struct.unpack(">H", body[:2])
        elif marker == 0xDA:
            n = body[0]
            scan = ([(body[1 + 2 * i], body[2 + 2 * i] >> 4, body[2 + 2 * i] & 15) for i in range(n)], end)
    if frame is None or scan is None:
        raise CodecError("malformed JPEG: no baseline frame header (SOF0/SOF1) before the scan")
    sel, start = scan
    if len(sel) != len(frame["comps"]):
        raise CodecError("multi-scan JPEGs are not supported; only a single scan with every component")
    bits, restarts, stuffed, markers, scan_bytes = _scan_bits(data, start)
    if data[start + scan_bytes : start + scan_bytes + 2] != b"\xff\xd9":
        raise CodecError(
            "JPEG has more than one scan (or no EOI after it); only single-scan baseline files are supported"
        )
    comps = {c["id"]: c for c in frame["comps"]}
    hmax, vmax = max(c["h"] for c in frame["comps"]), max(c["v"] for c in frame["comps"])
    W, H = frame["width"], frame["height"]
    if len(sel) == 1:  # non-interleaved: the MCU is one block, raster over the component's own blocks
        c = comps[sel[0][0]]
        cw, ch = math.ceil(W * c["h"] / hmax), math.ceil(H * c["v"] / vmax)
        layout = [(sel[0], 1, 1)]
        mcu_rows, mcu_cols, mcu_size = (
            math.ceil(ch / 8),
            math.ceil(cw / 8),
            (8 * vmax // c["v"], 8 * hmax // c["h"]),
        )
    else:
        layout = [(s, comps[s[0]]["v"], comps[s[0]]["h"]) for s in sel]
        mcu_rows, mcu_cols, mcu_size = (
            math.ceil(H / (8 * vmax)),
            math.ceil(W / (8 * hmax)),
            (8 * vmax, 8 * hmax),
        )
    blocks = {s[0]: np.zeros((mcu_rows * v, mcu_cols * h)) for s, v, h in layout}
    pos, pad, n_mcu = 0, 0, mcu_rows * mcu_cols
    restarts_left = list(restarts)
    try:
        for m in range(n_mcu):
            if restart_interval and m and m % restart_interval == 0:
                boundary = restarts_left.pop(0)
                pad += boundary - pos
                pos = boundary
            my, mx = divmod(m, mcu_cols)
            for (cid, td, ta), v, h in layout:
                dc, ac = tables[(0, td)], tables[(1, ta)]
                for by in range(v):
                    for bx in range(h):
                        begin = pos
                        pos, s = _decode(bits, pos, dc)
                        pos += s
                        k = 1
                        while k < 64:
                            pos, rs = _decode(bits, pos, ac)
                            r, s = rs >> 4, rs & 15
                            if s == 0:
                                if r != 15:
                                    break
                                k += 16
                                continue
                            k, pos = k + r + 1, pos + s
                        blocks[cid][my * v + by, mx * h + bx] = pos - begin
    except (KeyError, IndexError) as e:
        raise CodecError(f"corrupt JPEG scan: Huffman decoding failed ({e!r})") from e
    if pos > len(bits):
        raise CodecError("corrupt JPEG scan: the coded blocks run past the end of the scan data")
    pad += len(bits) - pos
    names = ["Y", "Cb", "Cr"] if len(frame["comps"]) == 3 else [f"c{i}" for i in range(len(frame["comps"]))]
    out = [{"id": c["id"], "h": c["h"], "v": c["v"], "name": names[i], "blocks": blocks[c["id"]]}
           for i, c in enumerate(frame["comps"]) if c["id"] in blocks]  # fmt: skip
    return JpegBits(W, H, out, mcu_size, pad, stuffed, markers, scan_bytes)


def _decode(bits: str, pos: int, table: dict) -> tuple[int, int]:
    code = 0
    for length in range(1, 17):
        code = (code << 1) | (bits[pos] == "1")
        pos += 1
        sym = table.get((length, code))
        if sym is not None:
            return pos, sym
    raise KeyError(f"no Huffman code at bit {pos - 16}")


def jpeg_bit_map(data: bytes) -> BitMap:
    """Per-pixel map of a JPEG's real block bits (see the module docstring); ``total_bits`` is the blocks' sum."""
    jb = jpeg_block_bits(data)
    hmax, vmax = max(c["h"] for c in jb.components), max(c["v"] for c in jb.components)
    canvas: np.ndarray | None = None
    streams = {}
    for c in jb.components:
        spread = _spread(c["blocks"], 8 * vmax // c["v"], 8 * hmax // c["h"])
        if canvas is None:
            canvas = np.zeros(spread.shape)
        ch, cw = min(canvas.shape[0], spread.shape[0]), min(canvas.shape[1], spread.shape[1])
        canvas[:ch, :cw] += spread[:ch, :cw]
        streams[c["name"]] = spread[: jb.height, : jb.width]
    total = float(jb.block_bits)
    cropped = canvas[: jb.height, : jb.width]
    parts = {c["name"]: float(c["blocks"].sum()) for c in jb.components}
    cells = {c["name"]: c["blocks"].astype(int).tolist() for c in jb.components}
    return BitMap(cropped, total, total - float(cropped.sum()), parts, cells, streams)


# --------------------------------------------------------------------------- boxes


def box_share(bits: np.ndarray, box) -> tuple[float, float]:
    """(share of the map's bits inside ``box``, the box's share of the image area).

    ``box`` is (x0, y0, x1, y1) in pixels, inclusive, clipped to the image (Tiny ImageNet's convention).
    """
    h, w = bits.shape
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    if x1 < x0 or y1 < y0:
        raise ConfigError(f"box {tuple(box)} lies outside the {w}x{h} image")
    total = float(bits.sum())
    inside = float(bits[y0 : y1 + 1, x0 : x1 + 1].sum())
    return (inside / total if total > 0 else math.nan), (x1 - x0 + 1) * (y1 - y0 + 1) / (h * w)


def box_share_stats(bit_shares, area_shares, n_boot: int = 2000, seed: int = 0) -> dict:
    """How much more of its bits a codec spends inside the boxes than their area, with bootstrap 95% CIs.

    ``ratio_of_means`` = mean bit share / mean area share (robust to tiny boxes);
    ``mean_ratio`` = mean over images of bit share / area share. Images are resampled with
    replacement (seeded); images whose box is the whole image carry no information (ratio 1) and
    are counted in ``n_full_image_boxes``.
    """
    b, a = np.asarray(bit_shares, float), np.asarray(area_shares, float)
    ok = np.isfinite(b) & (a > 0)
    b, a = b[ok], a[ok]
    if b.size == 0:
        raise ConfigError("box_share_stats needs at least one image with bits and a non-empty box")
    idx = np.random.default_rng(seed).integers(0, b.size, size=(n_boot, b.size))
    rom, mr = b.mean() / a.mean(), (b / a).mean()
    rom_boot = b[idx].mean(1) / a[idx].mean(1)
    mr_boot = (b / a)[idx].mean(1)
    return {
        "n": int(b.size), "n_full_image_boxes": int(np.sum(a >= 1.0)),
        "mean_bit_share": float(b.mean()), "mean_area_share": float(a.mean()),
        "ratio_of_means": float(rom), "ratio_of_means_ci95": np.quantile(rom_boot, [0.025, 0.975]).tolist(),
        "mean_ratio": float(mr), "mean_ratio_ci95": np.quantile(mr_boot, [0.025, 0.975]).tolist(),
        "share_images_ratio_above_1": float(np.mean(b > a)),
    }  # fmt: skip


# --------------------------------------------------------------------------- pictures


def render_grid(images: list[np.ndarray], maps: dict[str, list[np.ndarray]], path, boxes=None, names=None):
    """PNG grid, one row per image: the image, then per codec its bits/pixel map and an overlay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    cols = 1 + 2 * len(maps)
    fig, axes = plt.subplots(len(images), cols, figsize=(1.9 * cols, 1.9 * len(images)), squeeze=False)
    for r, im in enumerate(images):
        axes[r, 0].imshow(im)
        axes[r, 0].set_title(names[r] if names else "image", fontsize=6)
        for k, (codec, ms) in enumerate(maps.items()):
            m = ms[r]
            ax_map, ax_over = axes[r, 1 + 2 * k], axes[r, 2 + 2 * k]
            shown = ax_map.imshow(m, cmap="inferno", vmin=0)
            fig.colorbar(shown, ax=ax_map, fraction=0.046, pad=0.02).ax.tick_params(labelsize=5)
            ax_map.set_title(f"{codec}: {m.sum():.0f} bits", fontsize=6)
            ax_over.imshow(im)
            ax_over.imshow(m / (m.max() or 1), cmap="inferno", alpha=0.55, vmin=0, vmax=1)
            ax_over.set_title("overlay (bits/px)", fontsize=6)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
            if boxes is not None:
                x0, y0, x1, y1 = boxes[r]
                ax.add_patch(
                    Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, ec="cyan", lw=0.8)
                )
    fig.tight_layout()
    fig.savefig(path, dpi=130, format="png")
    plt.close(fig)
    return path
