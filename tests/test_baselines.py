"""Standard codecs: real files, real decoders, honest byte counts."""

from __future__ import annotations

import io
import json
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
    BlockAverage,
    Downsample,
    DownsampleJPEG,
    Identity,
    JPEGQTable,
    WebP,
    available_codecs,
    avif_backend,
    avif_payload_bytes,
    jpeg_payload_bytes,
    jpeg_scan_sizes,
    libjpeg_scaled,
    make_codec,
    png_payload_bytes,
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
        for setting in DEFAULT_SWEEPS.get(name, []):
            assert make_codec(name, setting).name == name
    assert set(available_codecs()) - set(DEFAULT_SWEEPS) == {"jpeg_qtable"}  # its tables come from a study


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


# --------------------------------------------------------------------------- block average + side channel

BLOCK_AVERAGE_SETTINGS = [
    {"factor": 2, "levels": 0, "small": "png"},
    {"factor": 2, "levels": 4, "small": "png"},
    {"factor": 3, "levels": 8, "small": "webp_lossless"},
    {"factor": 4, "levels": 2, "small": "jpeg", "quality": 50},
    {"factor": 4, "levels": 4, "small": "webp", "quality": 30},
]


def _block_average_parts(data: bytes) -> tuple[int, bytes, bytes]:
    """(flags, small-image bytes, side-channel bytes) of a block-average file, parsed independently."""
    flags, pos = data[0], 2
    if not (flags >> 3) & 3:
        return flags, data[2:], b""
    length, shift = 0, 0
    while True:
        length |= (data[pos] & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not data[pos - 1] & 0x80:
            break
    return flags, data[pos : pos + length], data[pos + length :]


@pytest.mark.parametrize(
    "setting", BLOCK_AVERAGE_SETTINGS, ids=lambda s: make_codec("block_average", s).setting
)
@pytest.mark.parametrize("shape", [(64, 64), (37, 23), (1, 1)])
def test_block_average_round_trip_and_bytes(setting, shape, image):
    codec = make_codec("block_average", setting)
    h, w = shape
    enc = codec.encode(np.ascontiguousarray(image[:h, :w]))
    assert enc.decoded.shape == (h, w, 3) and enc.decoded.dtype == np.uint8
    assert enc.file_bytes == len(enc.data) and 0 < enc.payload_bytes < enc.file_bytes
    np.testing.assert_array_equal(BlockAverage(2, 0).decode(enc.data), enc.decoded)  # from the bytes alone
    flags, small, side = _block_average_parts(enc.data)
    assert (flags & 7) + 1 == setting["factor"]
    k = setting["factor"]
    with Image.open(io.BytesIO(small)) as im:
        assert im.size == (math.ceil(w / k), math.ceil(h / k))
    if setting["levels"]:
        bits = math.ceil(h / k) * math.ceil(w / k) * int(math.log2(setting["levels"]))
        raw = math.ceil(bits / 8)
        assert 0 < len(side) <= raw and (len(side) == raw or flags & 32)  # raw, or deflate when shorter
    small_payload = {"png": png_payload_bytes, "jpeg": jpeg_payload_bytes}.get(
        setting["small"], webp_payload_bytes
    )
    assert enc.payload_bytes == small_payload(small) + len(side)


def test_block_average_side_channel_is_counted_and_used(image):
    plain = BlockAverage(2, levels=0).encode(image)
    side = BlockAverage(2, levels=4).encode(image)
    _, small_plain, _ = _block_average_parts(plain.data)
    _, small_side, side_bytes = _block_average_parts(side.data)
    assert small_plain == small_side  # the same small image; the rest is the side channel and its length
    assert side.file_bytes == plain.file_bytes + len(side_bytes) + 2  # 2: the LEB128 length of 1000+ B
    # without a side channel and losslessly coded, it is exactly Downsample's reconstruction
    np.testing.assert_array_equal(plain.decoded, Downsample(2).encode(image).decoded)
    # textured blocks get their variation back: more high-frequency energy than the plain upsampling
    hf = lambda a: np.abs(np.diff(a.astype(float), axis=1)).mean()  # noqa: E731
    assert hf(plain.decoded) < hf(side.decoded) and not np.array_equal(plain.decoded, side.decoded)
    # deterministic: encoding twice gives the same bytes and the same pixels
    again = BlockAverage(2, levels=4).encode(image)
    assert again.data == side.data and np.array_equal(again.decoded, side.decoded)


def test_block_average_rejects_truncated_files(image):
    data = BlockAverage(2, levels=4).encode(image).data
    for cut in (1, 4, len(data) - 40):
        with pytest.raises(CodecError):
            BlockAverage(2).decode(data[:cut])


@pytest.mark.parametrize(
    "setting",
    [
        {"factor": 1},
        {"factor": 9},
        {"factor": 2, "levels": 3},
        {"factor": 2, "small": "gif"},
        {"factor": 2, "small": "png", "quality": 50},
        {"factor": 2, "small": "jpeg"},
        {"factor": 2, "small": "webp", "quality": 101},
        {"factor": 2, "bogus": 1},
        2,
    ],
)
def test_block_average_rejects_bad_settings(setting):
    with pytest.raises(ConfigError):
        make_codec("block_average", setting)


def test_png_payload_is_idat(image):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    data = buf.getvalue()
    idat = data.index(b"IDAT") - 4
    assert png_payload_bytes(data) == struct.unpack(">I", data[idat : idat + 4])[0] < len(data)
    for bad in (b"", b"not a png", data[:8]):
        with pytest.raises(CodecError):
            png_payload_bytes(bad)


# --------------------------------------------------------------------------- JPEG with custom tables

ZIGZAG = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14,
    21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60,
    61, 54, 47, 55, 62, 63,
]  # fmt: skip


def _dqt_tables(data: bytes) -> dict[int, list[int]]:
    """8-bit quantisation tables of a JPEG file's DQT segments, converted from zigzag to natural order."""
    tables, pos = {}, 2
    while data[pos : pos + 2] != b"\xff\xda":
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if data[pos + 1] == 0xDB:
            seg = data[pos + 4 : pos + 2 + length]
            for t in range(0, len(seg), 65):
                natural = [0] * 64
                for z, v in enumerate(seg[t + 1 : t + 65]):
                    natural[ZIGZAG[z]] = v
                tables[seg[t] & 15] = natural
        pos += 2 + length
    return tables


def test_jpeg_qtable_writes_the_custom_table(image, tmp_path):
    luma = [1 + (3 * i + 5 * j) % 97 for i in range(8) for j in range(8)]  # asymmetric, so transposes show
    chroma = [200 - 2 * i - j for i in range(8) for j in range(8)]
    path = tmp_path / "tables.json"
    path.write_text(json.dumps({"luma": luma, "chroma": chroma}))
    codec = make_codec("jpeg_qtable", {"quality": 50, "tables": str(path)})
    assert isinstance(codec, JPEGQTable) and codec.setting == "q=50,tables"
    enc = codec.encode(image)
    assert _dqt_tables(enc.data) == {0: luma, 1: chroma}  # quality 50 = the base tables themselves
    with Image.open(io.BytesIO(enc.data)) as im:
        assert [list(im.quantization[i]) for i in (0, 1)] == [luma, chroma]
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), enc.decoded)
    assert enc.payload_bytes == jpeg_payload_bytes(enc.data) < enc.file_bytes
    q20 = JPEGQTable(20, {"luma": luma, "chroma": chroma})
    assert (
        _dqt_tables(q20.encode(image).data)[0]
        == libjpeg_scaled(luma, 20)
        == [min((v * 250 + 50) // 100, 255) for v in luma]  # libjpeg: scale 250%, rounded
    )
    assert q20.setting.startswith("q=20,custom-")


@pytest.mark.parametrize("shape", [(37, 23), (1, 1)])
def test_jpeg_qtable_odd_sizes(shape, image):
    tables = {"luma": [16] * 64, "chroma": [32] * 64}
    enc = JPEGQTable(50, tables, subsampling="4:2:0").encode(
        np.ascontiguousarray(image[: shape[0], : shape[1]])
    )
    assert enc.decoded.shape == (*shape, 3) and enc.file_bytes == len(enc.data)


@pytest.mark.parametrize(
    "tables",
    [
        {"luma": [16] * 63, "chroma": [16] * 64},
        {"luma": [0] * 64, "chroma": [16] * 64},
        {"luma": [256] * 64, "chroma": [16] * 64},
        {"luma": [16] * 64},
        "does/not/exist.json",
        5,
    ],
)
def test_jpeg_qtable_rejects_bad_tables(tables):
    with pytest.raises(ConfigError):
        make_codec("jpeg_qtable", {"quality": 50, "tables": tables})


def test_source_jpeg_reads_a_files_libjpeg_quality_and_requantises_it_almost_losslessly(image) -> None:
    """A file saved at libjpeg quality q reports q; re-encoding its pixels at q changes them far less than below q."""
    from conftest import bench_module

    from taskcodec.errors import DataError

    bench = bench_module("source_jpeg")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=75)
    described = bench.describe_source(buf.getvalue())
    assert described == {"bytes": len(buf.getvalue()), "format": "JPEG", "subsampling": "4:2:0", "quality": 75}
    source = np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))[None]
    same, lower = bench.requantise(source, 75), bench.requantise(source, 50)
    assert same["mae"] < lower["mae"] / 3 and same["file_bytes_per_image"] > lower["file_bytes_per_image"]
    custom = io.BytesIO()
    Image.fromarray(image).save(custom, format="JPEG", qtables=[[7] * 64, [9] * 64])
    assert bench.describe_source(custom.getvalue())["quality"] is None  # not a libjpeg standard table
    png = io.BytesIO()
    Image.fromarray(image).save(png, format="PNG")
    assert bench.describe_source(png.getvalue())["format"] == "PNG"
    with pytest.raises(DataError, match="not a readable image"):
        bench.describe_source(b"not an image")
