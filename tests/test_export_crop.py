"""Exports of models trained with timm's evaluation crop (crop_pct < 1, e.g. Imagenette at 128 px): every client
codes a photo the way the test images were prepared, and says so."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from tiny_codec import CLASS_NAMES, SAMPLE, tiny_codec

from taskcodec.bitstream import unpack_record
from taskcodec.cli import main
from taskcodec.container import read_container
from taskcodec.export import export_codec, load_encoder
from taskcodec.io import read_rgb, to_tensor
from taskcodec.preprocessing import preprocessing_config

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def cropped_export(tmp_path_factory):
    """A light codec exported as trained on 32x32 centre crops of images resized to floor(32 / 0.875) = 36."""
    out = tmp_path_factory.mktemp("crop-export")
    codec = tiny_codec("light", entropy="factorized", channels=[8, 8], act="gdn")
    meta = {"lmbda": 1.0, "class_names": CLASS_NAMES, "preprocessing": preprocessing_config(32, 32, crop_pct=0.875)}
    enc, dec = export_codec(codec, out, meta)
    assert main(["export", str(enc), "--onnx", "-q"]) == 0
    photos = out / "photos"
    photos.mkdir()
    for k, src in enumerate(sorted(SAMPLE.rglob("*.JPEG"))[:4]):  # photo-sized: 640x480 and 480x640
        size = (640, 480) if k % 2 == 0 else (480, 640)
        Image.open(src).convert("RGB").resize(size, Image.Resampling.BICUBIC).save(photos / f"p{k}.jpg", quality=95)
    return codec, enc, next(out.glob("client-*.onnx")), sorted(photos.glob("*.jpg"))


def test_every_client_codes_the_timm_crop_of_a_photo(cropped_export, tmp_path, capsys):
    codec, enc, onnx_path, photos = cropped_export
    from taskcodec.client import load_onnx_client

    expected = np.stack([read_rgb(p, size=(32, 32), crop_pct=0.875) for p in photos])
    resized_only = np.stack([read_rgb(p, size=(32, 32)) for p in photos])
    assert not np.array_equal(expected, resized_only)  # the crop matters for these photos
    wanted = codec.encode(to_tensor(expected))
    out = tmp_path / "cli.tca"
    assert main(["compress", *map(str, photos), "-m", str(enc), "-o", str(out), "--archive", "-q"]) == 0
    cli_records = [e.record for e in read_container(out.read_bytes()).entries]
    assert cli_records == wanted and all(unpack_record(r)[:2] == (32, 32) for r in cli_records)
    onnx_records = [e.record for e in read_container(load_onnx_client(onnx_path).compress(photos)).entries]
    assert sum(a == b for a, b in zip(onnx_records, wanted, strict=True)) >= len(photos) - 1  # float rounding
    import taskcodec

    api_records = [e.record for e in read_container(taskcodec.load_client(enc).compress(photos)).entries]
    assert api_records == wanted
    capsys.readouterr()
    assert main(["info", str(enc)]) == 0
    assert "floor(input size / 0.875)" in capsys.readouterr().out
    _, meta = load_encoder(enc)
    assert meta["preprocessing"]["crop_pct"] == 0.875
