"""Golden vectors for the page's JavaScript: what the Python coder, container and Pillow write.

``python tests/web/golden.py`` rewrites ``tests/web/golden.json``; ``tests/test_web.py`` checks the
committed file is what this writes now (so a change to the Python side fails until the vectors are
rewritten and the JS agrees again), and ``node --test tests/web/`` checks the JS against the file.
"""

from __future__ import annotations

import base64
import io
import json
import math
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from test_range_coder import quantised_cdf  # noqa: E402

from taskcodec.bitstream import pack_record  # noqa: E402
from taskcodec.container import Entry, write_container  # noqa: E402
from taskcodec.io import read_rgb  # noqa: E402
from taskcodec.range_coder import RangeEncoder  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden.json"
INT32 = (-(2**31), 2**31 - 1)


class _CarryCountingEncoder(RangeEncoder):
    """The reference encoder, counting carries that ripple through a run of 0xFF bytes."""

    carries = 0

    def _shift_low(self) -> None:
        if self._low > 0xFFFFFFFF and self._cache_size > 1:
            type(self).carries += 1
        super()._shift_low()


def _b64(data: bytes) -> str:
    return base64.b64encode(bytes(data)).decode()


def coder_case(name: str, cdfs: list[list[int]], offsets: list[int], segments: list[tuple[list[int], list[int]]]) -> dict:
    enc = _CarryCountingEncoder()
    lengths = [len(c) for c in cdfs]
    for syms, idx in segments:
        enc.encode_with_indexes(syms, idx, cdfs, lengths, offsets)
    return {"name": name, "cdfs": cdfs, "cdf_lengths": lengths, "offsets": offsets,
            "segments": [{"symbols": s, "indexes": i} for s, i in segments], "bytes": enc.flush().hex()}  # fmt: skip


def coder_cases() -> list[dict]:
    rng = random.Random(0)
    three = quantised_cdf([1.0, 2.0, 3.0])
    two = quantised_cdf([1.0, 1.0])  # one symbol and the escape
    cases = [
        coder_case("empty stream", [three], [0], []),
        coder_case("one symbol", [three], [0], [([1], [0])]),
        coder_case("escape below the range", [three], [0], [([-1, -7, -300], [0, 0, 0])]),
        coder_case("escape above the range", [three], [0], [([2, 3, 40, 5000], [0, 0, 0, 0])]),
        coder_case("int32 extremes", [two, three], [0, -8], [([INT32[0], INT32[1], 0, INT32[1]], [0, 1, 1, 0])]),
        coder_case("symbol and escape only", [two], [3], [([3, 3, 4, 2, 3], [0] * 5)]),
        coder_case("several segments", [three, two], [0, -1], [([0, 1], [0, 1]), ([], []), ([2, 0, -1], [0, 0, 1])]),
        coder_case("a long run of the likeliest symbol", [quantised_cdf([1000.0, 1.0, 1.0])], [0], [([0] * 2000, [0] * 2000)]),
    ]
    for k in range(30):  # random tables, offsets, symbols in and far out of range, 1-3 segments
        cdfs = [quantised_cdf([rng.random() ** 3 + 1e-6 for _ in range(rng.randint(2, 24))]) for _ in range(rng.randint(1, 4))]
        offsets = [rng.randint(-8, 8) for _ in cdfs]
        segments = []
        for _ in range(rng.randint(1, 3)):
            idx = [rng.randrange(len(cdfs)) for _ in range(rng.randint(0, 120))]
            syms = [rng.randint(-4, 24) if rng.random() < 0.9 else rng.randint(*INT32) for _ in idx]
            segments.append((syms, idx))
        cases.append(coder_case(f"random {k}", cdfs, offsets, segments))
    if not _CarryCountingEncoder.carries:
        raise AssertionError("no vector carries through a run of 0xFF bytes; add one")
    return cases


def container_cases() -> list[dict]:
    payload = bytes(range(1, 40))
    records = [(64, 64, payload), (32, 32, b"\x07"), (65, 300, payload[:5]), (1, 70000 - 4464, b"\x01\x02")]
    cases = []
    for h, w, p in records:
        cases.append({"kind": "record", "height": h, "width": w, "payload": p.hex(), "bytes": pack_record(h, w, p).hex()})
    entries = [Entry(pack_record(64, 64, payload)), Entry(b"\x00" * 200, label=300), Entry(b"\x05", name="photo é.png"),
               Entry(b"\x09\x08", label=0, name="")]  # fmt: skip
    for k in range(len(entries) + 1):
        chosen = entries[:k]
        cases.append({"kind": "container", "codec_id": "39be9f571c870111",
                      "entries": [{"record": e.record.hex(), "label": e.label, "name": e.name} for e in chosen],
                      "bytes": write_container(chosen, "39be9f571c870111").hex()})  # fmt: skip
    return cases


def _image(rng: np.random.RandomState, w: int, h: int) -> np.ndarray:
    """Smooth gradients plus noise and hard edges: overshoot that Pillow's clip8 must clamp."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / max(1, w - 1), yy * 255 / max(1, h - 1), (xx + yy) % 32 * 8], axis=-1)
    noise = rng.randint(-60, 61, size=(h, w, 3))
    edges = np.where((xx // 3 + yy // 5) % 2 == 0, 255, 0)[..., None]
    image = np.where(rng.rand(h, w, 1) < 0.2, edges, base + noise)
    return np.clip(image, 0, 255).astype(np.uint8)


def resize_cases() -> list[dict]:
    rng = np.random.RandomState(0)
    sizes = [((60, 45), (40, 30)), ((20, 13), (64, 42)), ((150, 40), (32, 9)), ((1, 30), (5, 7)), ((40, 24), (39, 24)),
             ((24, 40), (24, 7)), ((33, 60), (33, 11)), ((7, 7), (50, 50))]  # fmt: skip
    cases = []
    for (w, h), (ow, oh) in sizes:
        rgb = _image(rng, w, h)
        out = np.asarray(Image.fromarray(rgb).resize((ow, oh), Image.Resampling.BICUBIC))
        cases.append({"width": w, "height": h, "out_width": ow, "out_height": oh, "rgb": _b64(rgb.tobytes()),
                      "expected": _b64(out.tobytes())})  # fmt: skip
    return cases


def _timm_fit(w: int, h: int, out_w: int, out_h: int, crop_pct: float) -> tuple[int, int]:
    """The shorter side to floor(size / crop_pct) (preprocessing.py's record; io._resize does this)."""
    fit_w, fit_h = math.floor(out_w / crop_pct), math.floor(out_h / crop_pct)
    scale = max(fit_w / w, fit_h / h)
    return max(fit_w, round(w * scale)), max(fit_h, round(h * scale))


def preprocess_cases() -> list[dict]:
    """Whole preprocessing (fit, bicubic, centre crop) of PNGs; crop_pct 1.0 through io.read_rgb itself."""
    rng = np.random.RandomState(1)
    cases = []
    for (w, h), (ow, oh), crop_pct in [((49, 37), (32, 32), 1.0), ((45, 61), (32, 32), 1.0), ((32, 32), (32, 32), 1.0),
                                       ((20, 15), (32, 32), 1.0), ((65, 32), (32, 32), 1.0), ((45, 35), (32, 32), 0.875),
                                       ((32, 32), (28, 28), 0.875), ((51, 29), (16, 24), 0.9)]:  # fmt: skip
        rgb = _image(rng, w, h)
        png = io.BytesIO()
        Image.fromarray(rgb).save(png, format="PNG")
        if crop_pct == 1.0:
            out = read_rgb(png.getvalue(), size=(oh, ow))
        else:
            nw, nh = _timm_fit(w, h, ow, oh, crop_pct)
            scaled = Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BICUBIC) if (nw, nh) != (w, h) else Image.fromarray(rgb)
            left, top = (nw - ow) // 2, (nh - oh) // 2
            out = np.asarray(scaled.crop((left, top, left + ow, top + oh)))
        cases.append({"width": w, "height": h, "out_width": ow, "out_height": oh, "crop_pct": crop_pct,
                      "rgb": _b64(rgb.tobytes()), "expected": _b64(np.asarray(out).tobytes())})  # fmt: skip
    return cases


def golden() -> dict:
    return {"about": "written by tests/web/golden.py from the Python coder, container and Pillow; do not edit",
            "coder": coder_cases(), "containers": container_cases(), "resize": resize_cases(),
            "preprocess": preprocess_cases()}  # fmt: skip


def render() -> str:
    return json.dumps(golden(), separators=(",", ":")) + "\n"


if __name__ == "__main__":
    GOLDEN.write_text(render())
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")
