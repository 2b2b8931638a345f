"""Bit maps (learned codecs and JPEG), box shares, and `taskcodec analyze`."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_codec import SAMPLE, export_tiny, tiny_codec

from taskcodec.analysis.bits import (
    box_share,
    box_share_stats,
    jpeg_bit_map,
    jpeg_block_bits,
    learned_bit_maps,
)
from taskcodec.baselines import JPEG, jpeg_payload_bytes
from taskcodec.cli import main
from taskcodec.errors import CodecError, ConfigError
from taskcodec.io import read_rgb, to_tensor

IMAGES = sorted((SAMPLE / "val" / "images").glob("*.JPEG"))


def _image(k: int = 0) -> np.ndarray:
    return read_rgb(IMAGES[k])


@pytest.mark.parametrize(
    ("family", "kwargs"),
    [("split", {}), ("split", {"entropy": "hyperprior", "split": "layer4"}), ("hyperprior", {})],
)
@pytest.mark.parametrize("size", [(64, 64), (23, 37)])
def test_learned_map_sums_to_estimated_bits(family: str, kwargs: dict, size: tuple[int, int]) -> None:
    codec = tiny_codec(family, **kwargs)
    x = torch.stack([to_tensor(_image(k)) for k in range(2)])[..., : size[0], : size[1]]
    maps = learned_bit_maps(codec, x)
    est = codec.compress(x)["est_bits"]
    for m, e in zip(maps, est, strict=True):
        assert m.bits.shape == size
        assert m.bits.sum() + m.padding_bits == pytest.approx(float(e), rel=1e-4, abs=1e-3)
        assert sum(m.parts.values()) == pytest.approx(m.total_bits)
        assert sum(s.sum() for s in m.streams.values()) == pytest.approx(m.bits.sum())
        if size[0] % codec.stride == 0 and size[1] % codec.stride == 0:
            assert m.padding_bits == pytest.approx(0, abs=1e-6)
    if kwargs.get("entropy") == "hyperprior" or family == "hyperprior":
        assert set(maps[0].parts) == {"y", "z"}


def test_learned_map_needs_eval_mode() -> None:
    codec = tiny_codec().train()
    with pytest.raises(ConfigError, match="eval"):
        learned_bit_maps(codec, to_tensor(_image())[None])


@pytest.mark.parametrize("quality", [5, 30, 90])
@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
@pytest.mark.parametrize("crop", [(64, 64), (23, 37)])
def test_jpeg_block_bits_add_up_to_the_scan(quality: int, subsampling: str, crop: tuple[int, int]) -> None:
    enc = JPEG(quality, subsampling=subsampling).encode(_image()[: crop[0], : crop[1]])
    jb = jpeg_block_bits(enc.data)
    exact = jb.block_bits + jb.padding_bits + 8 * (jb.stuffed_bytes + jb.marker_bytes)
    assert exact == 8 * enc.payload_bytes  # nothing estimated: every scan bit is accounted for
    assert abs(jb.block_bits / 8 - enc.payload_bytes) <= 0.03 * enc.payload_bytes + 1
    m = jpeg_bit_map(enc.data)
    assert m.bits.shape == crop
    assert m.bits.sum() + m.padding_bits == pytest.approx(m.total_bits)
    assert set(m.parts) == {"Y", "Cb", "Cr"}


@pytest.mark.parametrize("options", [{"restart_marker_blocks": 1}, {"restart_marker_rows": 1}, {}])
def test_jpeg_restart_markers_and_grayscale(options: dict) -> None:
    for mode in ("RGB", "L"):
        buf = io.BytesIO()
        Image.fromarray(_image()).convert(mode).save(buf, format="JPEG", quality=40, **options)
        jb = jpeg_block_bits(buf.getvalue())
        exact = jb.block_bits + jb.padding_bits + 8 * (jb.stuffed_bytes + jb.marker_bytes)
        assert exact == 8 * jpeg_payload_bytes(buf.getvalue())


def test_jpeg_unsupported_or_corrupt() -> None:
    buf = io.BytesIO()
    Image.fromarray(_image()).save(buf, format="JPEG", quality=40, progressive=True)
    with pytest.raises(CodecError, match="progressive"):
        jpeg_block_bits(buf.getvalue())
    with pytest.raises(CodecError):
        jpeg_block_bits(b"not a jpeg")
    data = JPEG(40).encode(_image()).data
    with pytest.raises(CodecError):
        jpeg_block_bits(data[: len(data) // 2])


def test_box_share_known_answer() -> None:
    bits = np.zeros((4, 4))
    bits[:2, :2] = 3.0  # 12 bits in the top-left quarter
    bits[3, 3] = 4.0  # 4 bits elsewhere
    share, area = box_share(bits, (0, 0, 1, 1))  # inclusive: the 2x2 top-left block
    assert (share, area) == (0.75, 0.25)
    assert box_share(bits, (-5, -5, 10, 10)) == (1.0, 1.0)  # clipped to the image
    with pytest.raises(ConfigError):
        box_share(bits, (10, 10, 12, 12))
    stats = box_share_stats([0.5, 0.5], [0.25, 0.5], n_boot=200)
    assert stats["ratio_of_means"] == pytest.approx(0.5 / 0.375)
    assert stats["mean_ratio"] == pytest.approx((2.0 + 1.0) / 2)
    assert stats["mean_ratio_ci95"][0] <= stats["mean_ratio"] <= stats["mean_ratio_ci95"][1]
    assert stats["n"] == 2 and stats["n_full_image_boxes"] == 0


def test_cli_analyze(tmp_path, capsys) -> None:
    _, enc, _ = export_tiny(tmp_path / "export")
    out = tmp_path / "analysis"
    val = str(SAMPLE / "val" / "images")
    assert main(["analyze", val, "-m", str(enc), "--jpeg-quality", "30", "-o", str(out), "-q", "--grid", "3"]) == 0
    report = json.loads((out / "bits.json").read_text())
    assert len(report["images"]) == len(IMAGES)
    first = report["images"][0]["codecs"]
    assert {k.split("-")[0] for k in first} == {"split", "jpeg"}
    assert (out / "bitmaps.png").stat().st_size > 1000
    assert "bits.json" in capsys.readouterr().out


def test_cli_analyze_bad_input(tmp_path, capsys) -> None:
    assert main(["analyze", str(tmp_path / "missing.png"), "--jpeg-quality", "30", "-o", str(tmp_path)]) == 2
    assert main(["analyze", str(SAMPLE / "wnids.txt"), "--jpeg-quality", "30", "-o", str(tmp_path)]) == 2
    assert main(["analyze", str(IMAGES[0]), "-o", str(tmp_path)]) == 2  # nothing to analyse
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("taskcodec: error:") for line in err)
    assert main(["analyze", str(IMAGES[0]), "-m", str(SAMPLE / "wnids.txt"), "-o", str(tmp_path)]) == 2
