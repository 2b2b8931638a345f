"""Seeded mutation fuzzing: damaged containers and records give only taskcodec errors, fast.

Two layers: whole container files (the CRC catches nearly everything before decoding) and bare
records handed to the decoder (no CRC in the way, so the range decoder and the size checks are
what is exercised). A mutated record may also decode to some label: that is allowed for a bare
record; what is never allowed is another exception type, or a case slower than the bound.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

import pytest
import torch
from tiny_codec import SAMPLE, tiny_codec

from taskcodec.batching import decode_latents, decode_records
from taskcodec.bitstream import pack_record, put_varint
from taskcodec.container import Entry, read_container, write_container
from taskcodec.errors import TaskcodecError
from taskcodec.io import load_image

CASE_SECONDS = 5.0
RESULTS = Path(__file__).resolve().parents[1] / "results" / "fuzz" / "fuzz.json"


def _mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    op = rng.randrange(8)
    if op == 0 and out:  # bit flips
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif op == 1:  # truncation
        del out[rng.randrange(len(out) + 1) :]
    elif op == 2:  # appended garbage
        out += rng.randbytes(rng.randint(1, 64))
    elif op == 3:  # random bytes, same length
        out = bytearray(rng.randbytes(len(out)))
    elif op == 4 and out:  # a run of bytes set to one value
        start = rng.randrange(len(out))
        out[start : start + rng.randint(1, 16)] = bytes([rng.choice((0, 0xFF, rng.randrange(256)))]) * rng.randint(1, 16)
    elif op == 5:  # a record header claiming another (often huge) size
        header = bytearray([0xFF])
        put_varint(rng.choice((0, 1, 7, 65, 4096, 4097, 1 << 16, (1 << 16) + 1, rng.randrange(1 << 32))), header)
        put_varint(rng.choice((0, 1, 13, 64, 4096, 1 << 16, rng.randrange(1 << 32))), header)
        out = header + out[1:]
    elif op == 6:  # random file
        out = bytearray(rng.randbytes(rng.randint(0, 200)))
    else:  # deleted or duplicated chunk
        a, b = sorted(rng.randrange(len(out) + 1) for _ in range(2))
        out = out[:a] + out[b:] if rng.random() < 0.5 else out[:b] + out[a:b] + out[b:]
    return bytes(out)


def run_fuzz(cases: int, seed: int) -> dict:
    """Run ``cases`` mutations; returns counts per outcome and the slowest case."""
    torch.set_num_threads(1)
    codec = tiny_codec()
    images = torch.stack([load_image(p) for p in sorted((SAMPLE / "val" / "images").iterdir())[:3]])
    records = codec.encode(images) + [pack_record(13, 29, codec.compress(images[:1, :, :29, :13].transpose(2, 3))["payloads"][0])]
    cid = "0123456789abcdef"
    container = write_container([Entry(r, label=k, name=f"img{k}") for k, r in enumerate(records)], cid)
    rng = random.Random(seed)
    outcomes: dict[str, int] = {}
    slowest = 0.0
    for case in range(cases):
        start = time.perf_counter()
        try:
            if case % 2:
                c = read_container(_mutate(container, rng))
                c.check_codec(cid)
                got = [e.record for e in c.entries] or records[:1]
            else:
                got = [_mutate(records[rng.randrange(len(records))], rng)]
            decode_records(codec, got)
            if case % 4 == 0:
                decode_latents(codec, got)
            outcome = "decoded"
        except TaskcodecError as e:
            outcome = type(e).__name__
        elapsed = time.perf_counter() - start
        slowest = max(slowest, elapsed)
        assert elapsed < CASE_SECONDS, f"case {case} (seed {seed}) took {elapsed:.1f}s"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return {"cases": cases, "seed": seed, "outcomes": outcomes, "slowest_case_s": round(slowest, 3)}


def test_fuzz_fast() -> None:
    report = run_fuzz(300, seed=1)
    assert sum(report["outcomes"].values()) == 300
    assert report["outcomes"].get("BitstreamError", 0) > 100


@pytest.mark.slow
def test_fuzz_ten_thousand() -> None:
    report = run_fuzz(10_000, seed=2)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report["command"] = "python -m pytest -m slow tests/test_fuzz.py::test_fuzz_ten_thousand"
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=RESULTS.parents[2], capture_output=True, text=True)
    report["git_revision"] = git.stdout.strip() or "unknown"
    report["case_bound_s"] = CASE_SECONDS
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    assert sum(report["outcomes"].values()) == 10_000
