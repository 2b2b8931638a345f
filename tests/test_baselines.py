"""Standard codecs: real files, real decoders, honest byte counts."""

from __future__ import annotations

import io
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taskcodec.baselines import (
    AVIF,
    DEFAULT_SWEEPS,
    JPEG,
    Downsample,
    DownsampleJPEG,
    Identity,
    WebP,
    available_codecs,
    avif_backend,
    avif_payload_bytes,
    jpeg_payload_bytes,
    jpeg_scan_sizes,
    make_codec,
    webp_payload_bytes,
)
from taskcodec.errors import CodecError, ConfigError

SAMPLE_DIR = Path(__file__).parent / "data" / "tiny-imagenet-sample"
needs_avif = pytest.mark.skipif(avif_backend() is None, reason="no AVIF encoder installed")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A real 64x64 Tiny ImageNet image when the sample is present, else a smooth+texture synthetic one."""
    samples = sorted(SAMPLE_DIR.glob("**/*.JPEG"))
    if samples:
        with Image.open(samples[0]) as im:
            return np.asarray(im.convert("RGB"))
    y, x = np.mgrid[0:64, 0:64] / 64.0
    smooth = np.stack([128 + 100 * np.sin(6 * x + 2 * y), 128 + 80 * np.cos(5 * y) * x, 255 * x * y], -1)
    texture = (40 * np.sin(40 * x) * (y > 0.5))[..., None] + np.random.default_rng(0).normal(
        0, 12, (64, 64, 3)
    )
    return np.clip(smooth + texture, 0, 255).astype(np.uint8)


def all_codecs():
    codecs = [
        JPEG(75),
        JPEG(30, subsampling="4:4:4"),
        WebP(50),
        WebP(80, lossless=True),
        Downsample(2),
        Downsample(3, "nearest"),
        DownsampleJPEG(2, 50),
        Identity(),
    ]
    if avif_backend() is not None:
        codecs.append(AVIF(50))
    return codecs


@pytest.mark.parametrize("codec", all_codecs(), ids=repr)
@pytest.mark.parametrize("shape", [(64, 64), (37, 50), (1, 1)])
def test_round_trip_shapes_and_sizes(codec, shape, image):
    h, w = shape
    array = np.ascontiguousarray(image[:h, :w])
    enc = codec.encode(array)
    assert enc.decoded.shape == (h, w, 3) and enc.decoded.dtype == np.uint8
    assert enc.file_bytes == len(enc.data) > 0
    assert 0 < enc.payload_bytes <= enc.file_bytes


@pytest.mark.parametrize("codec", [JPEG(60), WebP(60)] + ([AVIF(60)] if avif_backend() else []), ids=repr)
def test_decoded_is_what_pillow_decodes_from_data(codec, image):
    enc = codec.encode(image)
    with Image.open(io.BytesIO(enc.data)) as im:
        assert im.format == codec.format
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), enc.decoded)
    assert 0 < enc.payload_bytes < enc.file_bytes
    assert not np.array_equal(enc.decoded, image)  # lossy


@pytest.mark.parametrize("make", [JPEG, WebP] + ([AVIF] if avif_backend() else []), ids=lambda c: c.__name__)
def test_file_size_grows_with_quality(make, image):
    sizes = [make(q).encode(image).file_bytes for q in (5, 50, 95)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_lossless_webp_and_identity_are_exact(image):
    np.testing.assert_array_equal(WebP(80, lossless=True).encode(image).decoded, image)
    enc = Identity().encode(image)
    np.testing.assert_array_equal(enc.decoded, image)
    assert enc.data == image.tobytes() and enc.payload_bytes == enc.file_bytes == image.size


def test_jpeg_payload_matches_independent_sos_to_eoi(image):
    data = JPEG(75).encode(image).data
    sos = data.rindex(b"\xff\xda")  # entropy data never holds an unstuffed FF DA, so the last one is the SOS
    (header_len,) = struct.unpack(">H", data[sos + 2 : sos + 4])
    assert data.endswith(b"\xff\xd9")
    assert jpeg_payload_bytes(data) == len(data) - 2 - (sos + 2 + header_len)
    assert jpeg_payload_bytes(data) < len(data)


def test_jpeg_progressive_sums_scans(image):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=75, progressive=True)
    data = buf.getvalue()
    scans = jpeg_scan_sizes(data)
    assert len(scans) > 1 and all(s > 0 for s in scans)
    assert jpeg_payload_bytes(data) == sum(scans)
    # Independent check: every byte is SOI/EOI, a marker segment (2 + length), or scan data.
    pos, header, n_sos = 2, 4, 0
    while data[pos : pos + 2] != b"\xff\xd9":
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        header += 2 + length
        pos += 2 + length
        if marker == 0xDA:
            n_sos += 1
            while not (data[pos] == 0xFF and data[pos + 1] != 0x00 and not 0xD0 <= data[pos + 1] <= 0xD7):
                pos += 1
    assert n_sos == len(scans)
    assert header + sum(scans) == len(data)


def test_jpeg_restart_markers_count_as_payload(image):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=75, restart_marker_blocks=1)
    data = buf.getvalue()
    assert any(bytes([0xFF, m]) in data for m in range(0xD0, 0xD8))
    sos = data.rindex(b"\xff\xda")
    (header_len,) = struct.unpack(">H", data[sos + 2 : sos + 4])
    assert jpeg_payload_bytes(data) == len(data) - 2 - (sos + 2 + header_len)


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"hello world",
        b"\xff\xd8\xff\xe0\x00",
        b"\xff\xd8\xff\xd9",
        b"\xff\xd8\xff\xda\x00\x08abcdef\x01\x02",
    ],
)
def test_jpeg_parser_rejects_malformed(bad):
    with pytest.raises(CodecError):
        jpeg_payload_bytes(bad)


def test_jpeg_parser_rejects_truncated(image):
    data = JPEG(75).encode(image).data
    for cut in (len(data) - 1, len(data) // 2, 30):
        with pytest.raises(CodecError):
            jpeg_payload_bytes(data[:cut])


def test_webp_payload_is_the_vp8_chunk(image):
    for codec, fourcc in ((WebP(50), b"VP8 "), (WebP(50, lossless=True), b"VP8L")):
        data = codec.encode(image).data
        assert data[12:16] == fourcc
        assert webp_payload_bytes(data) == struct.unpack("<I", data[16:20])[0]
        assert 0 < webp_payload_bytes(data) < len(data)


@pytest.mark.parametrize(
    "bad", [b"", b"RIFF\x00\x00\x00\x00WEBP", b"RIFF\xff\x00\x00\x00WEBPVP8 ", b"not a webp file"]
)
def test_webp_parser_rejects_garbage(bad):
    with pytest.raises(CodecError):
        webp_payload_bytes(bad)


@needs_avif
def test_avif_payload_is_mdat(image):
    data = AVIF(50).encode(image).data
    payload = avif_payload_bytes(data)
    assert 0 < payload < len(data)
    mdat = data.index(b"mdat") - 4
    (size,) = struct.unpack(">I", data[mdat : mdat + 4])
    assert payload == size - 8
    # A 64-bit largesize mdat, and a size-0 (to end of file) mdat, give the same payload.
    body = data[mdat + 8 : mdat + size]
    large = data[:mdat] + struct.pack(">I4sQ", 1, b"mdat", 16 + len(body)) + body + data[mdat + size :]
    assert avif_payload_bytes(large) == payload
    if mdat + size == len(data):
        assert avif_payload_bytes(data[:mdat] + b"\x00\x00\x00\x00mdat" + body) == payload


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x00\x00\x00\x10ftypavif\x00\x00\x00\x00", b"\x00\x00\x00\x10ftypavif", b"garbage bytes here"],
)
def test_avif_parser_rejects_garbage(bad):
    with pytest.raises(CodecError):
        avif_payload_bytes(bad)


@pytest.mark.parametrize("factor", [1, 2, 3, 8])
@pytest.mark.parametrize("shape", [(64, 64), (37, 50), (1, 1)])
def test_downsample_bytes_are_raw_small_pixels(factor, shape, image):
    h, w = shape
    enc = Downsample(factor).encode(np.ascontiguousarray(image[:h, :w]))
    assert enc.file_bytes == enc.payload_bytes == math.ceil(h / factor) * math.ceil(w / factor) * 3
    if factor == 1:
        np.testing.assert_array_equal(enc.decoded, image[:h, :w])


def test_downsample_decodes_from_its_bytes(image):
    codec = Downsample(4, "bilinear")
    enc = codec.encode(image)
    small = Image.frombytes("RGB", (16, 16), enc.data)
    np.testing.assert_array_equal(np.asarray(small.resize((64, 64), Image.Resampling.BILINEAR)), enc.decoded)
    assert not np.array_equal(enc.decoded, image)


def test_downsample_jpeg_is_a_real_small_jpeg(image):
    enc = DownsampleJPEG(2, 50).encode(image)
    with Image.open(io.BytesIO(enc.data)) as im:
        assert im.format == "JPEG" and im.size == (32, 32)
        up = im.convert("RGB").resize((64, 64), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(np.asarray(up), enc.decoded)
    assert enc.payload_bytes == jpeg_payload_bytes(enc.data)
    assert enc.file_bytes < JPEG(50).encode(image).file_bytes


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "1"])
def test_pil_input_of_any_mode_is_converted(mode, image):
    im = Image.fromarray(image).convert(mode)
    expected = np.asarray(im.convert("RGB"))
    for codec in all_codecs():
        enc = codec.encode(im)
        assert enc.decoded.shape == (64, 64, 3)
    np.testing.assert_array_equal(Identity().encode(im).decoded, expected)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((8, 8), np.uint8),
        np.zeros((8, 8, 4), np.uint8),
        np.zeros((8, 8, 3), np.float32),
        np.zeros((0, 8, 3), np.uint8),
        [[1, 2, 3]],
        "image.png",
    ],
)
def test_bad_input_raises_codec_error(bad):
    with pytest.raises(CodecError, match="HxWx3 uint8"):
        JPEG(75).encode(bad)


def test_make_codec_builds_each_codec():
    assert isinstance(make_codec("jpeg", 75), JPEG) and make_codec("jpeg", 75).setting == "q=75"
    assert make_codec("jpeg", "75").quality == 75 and make_codec("jpeg", 75.0).quality == 75
    assert make_codec("webp", 50).setting == "q=50"
    assert make_codec("downsample", 2).setting == "f=2,bicubic"
    assert make_codec("downsample", {"factor": 2, "interpolation": "bilinear"}).setting == "f=2,bilinear"
    assert make_codec("downsample_jpeg", {"factor": 2, "quality": 50}).setting == "f=2,q=50,bicubic"
    assert make_codec("none", None).name == "none" and make_codec("none", None).setting == "raw"
    assert make_codec("jpeg", {"quality": 40, "subsampling": "4:4:4"}).setting == "q=40,4:4:4"
    for name in available_codecs():
        for setting in DEFAULT_SWEEPS[name]:
            assert make_codec(name, setting).name == name


@pytest.mark.parametrize(
    ("name", "setting"),
    [
        ("png", 5),
        ("jpeg", 101),
        ("jpeg", -1),
        ("jpeg", 7.5),
        ("jpeg", "high"),
        ("jpeg", True),
        ("webp", {"quality": 50, "bogus": 1}),
        ("downsample", 0),
        ("downsample", {"factor": 2, "interpolation": "cubic"}),
        ("downsample_jpeg", 2),
        ("downsample_jpeg", {"factor": 2}),
        ("jpeg", {"quality": 50, "subsampling": "4:1:1"}),
        ("none", 5),
        ("avif", 200),
        ("webp", {"quality": 50, "method": 9}),
    ],
)
def test_make_codec_rejects_bad_names_and_settings(name, setting):
    with pytest.raises(ConfigError):
        make_codec(name, setting)


def test_unknown_codec_lists_choices():
    with pytest.raises(ConfigError, match="jpeg"):
        make_codec("png", 5)


def test_available_codecs_and_sweeps():
    names = available_codecs()
    assert {"jpeg", "webp", "downsample", "downsample_jpeg", "none"} <= set(names)
    assert ("avif" in names) == (avif_backend() is not None)
    assert DEFAULT_SWEEPS["jpeg"] == [5, 10, 20, 30, 50, 75, 90, 95]
    assert DEFAULT_SWEEPS["avif"] == sorted(DEFAULT_SWEEPS["avif"])
