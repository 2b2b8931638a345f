"""The codec itself: shapes, exact compress/decompress round trips, bitstreams, state dicts."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from taskcodec.bitstream import ImageStream, pack, pack_batch, unpack, unpack_batch
from taskcodec.errors import BitstreamError, CheckpointError, ConfigError
from taskcodec.models import CodecConfig, TaskCodec, load_reference_classifier


def tiny(head: str, stages: int = 2) -> TaskCodec:
    torch.manual_seed(0)
    return TaskCodec(CodecConfig(N=8, M=12, num_stages=stages, head=head, classifier="resnet18", num_classes=5))


@pytest.mark.parametrize("head", ["latent", "pixel"])
@pytest.mark.parametrize("size", [(64, 64), (50, 37), (17, 90)])
def test_shapes_any_size(head: str, size: tuple[int, int]) -> None:
    model = tiny(head).eval()
    x = torch.rand(2, 3, *size)
    out = model(x)
    assert out["logits"].shape == (2, 5)
    assert out["rate_bits"].shape == (2,) and (out["rate_bits"] > 0).all()
    s = model.config.stride
    assert out["y_hat"].shape == (2, 12, -(-size[0] // s) * s // 4, -(-size[1] // s) * s // 4)
    if head == "pixel":
        assert out["x_hat"].shape == x.shape  # cropped back to the input size
        assert out["x_hat"].min() >= 0 and out["x_hat"].max() <= 1


@pytest.mark.parametrize("head", ["latent", "pixel"])
def test_compress_decompress_matches_rounded_forward(head: str) -> None:
    model = tiny(head).eval()
    model.update(force=True)
    x = torch.rand(3, 3, 50, 37)
    with torch.no_grad():
        ref = model(x)
        streams = model.encode(x)
        dec = model.decode(streams)
    assert torch.equal(dec["y_hat"], ref["y_hat"])
    assert torch.equal(dec["y_hat"], torch.round(dec["y_hat"]))  # integer symbols, really quantised
    assert torch.equal(dec["logits"].argmax(1), ref["logits"].argmax(1))
    torch.testing.assert_close(dec["logits"], ref["logits"], rtol=0, atol=1e-5)
    assert all(isinstance(s, bytes) and len(s) > 4 for s in streams)


def test_training_forward_uses_straight_through_rounding() -> None:
    model = tiny("latent").train()
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = model(x)
    assert torch.equal(out["y_hat"], torch.round(out["y_hat"]))
    (out["logits"].sum() + out["rate_bits"].sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients pass the rounding


DECODE_SCRIPT = """
import sys, torch
from taskcodec.models import CodecConfig, TaskCodec
torch.manual_seed(0)
m = TaskCodec(CodecConfig(N=8, M=12, num_stages=2, head="latent", classifier="resnet18", num_classes=5)).eval()
m.update(force=True)
streams = torch.load(sys.argv[1], weights_only=True)
out = m.decode(streams)
torch.save({"y_hat": out["y_hat"], "logits": out["logits"]}, sys.argv[2])
"""


def test_decode_in_another_process_is_identical(tmp_path) -> None:
    model = tiny("latent").eval()
    model.update(force=True)
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        streams = model.encode(x)
        local = model.decode(streams)
    torch.save(streams, tmp_path / "streams.pt")
    subprocess.run([sys.executable, "-c", DECODE_SCRIPT, str(tmp_path / "streams.pt"), str(tmp_path / "out.pt")], check=True)
    remote = torch.load(tmp_path / "out.pt", weights_only=True)
    assert torch.equal(remote["y_hat"], local["y_hat"])
    assert torch.equal(remote["logits"], local["logits"])


def test_state_dict_loads_across_cdf_buffer_sizes() -> None:
    trained = tiny("latent").eval()
    trained.update(force=True)  # CDF buffers grow
    fresh = tiny("latent")
    fresh.load_state_dict(trained.state_dict())  # would fail on size mismatch without resizing
    fresh.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert fresh.encode(x) == trained.encode(x)


def test_bitstream_pack_unpack_and_errors() -> None:
    s = ImageStream(y=b"\x01\x02\x03", z=b"\xff" * 200, height=64, width=300)
    data = pack(s)
    assert unpack(data) == s
    assert len(data) == 1 + 1 + 2 + 2 + 200 + 3  # version, h, w (varint 2 bytes), len(z) (2 bytes)
    with pytest.raises(BitstreamError, match="empty"):
        unpack(b"")
    with pytest.raises(BitstreamError, match="version"):
        unpack(b"\x07" + data[1:])
    with pytest.raises(BitstreamError, match="truncated"):
        unpack(data[:50])
    with pytest.raises(BitstreamError, match="truncated"):
        unpack(data[:2])
    with pytest.raises(BitstreamError, match="one size"):
        unpack_batch([data, pack(ImageStream(b"", b"", 64, 64))])
    packed = pack_batch({"strings": [[b"a", b"bb"], [b"z", b"zz"]], "image_size": (8, 9)})
    assert unpack_batch(packed) == ([[b"a", b"bb"], [b"z", b"zz"]], (8, 9))


def test_bad_inputs_and_config() -> None:
    with pytest.raises(ConfigError, match="head"):
        CodecConfig(head="audio")
    with pytest.raises(ConfigError, match="num_stages"):
        CodecConfig(num_stages=0)
    with pytest.raises(ConfigError, match="RGB"):
        tiny("latent")(torch.rand(1, 1, 32, 32))
    with pytest.raises(ConfigError, match="ResNet-style"):
        TaskCodec(CodecConfig(N=8, M=8, head="latent", classifier="vit_tiny_patch16_224", num_classes=3))


def test_reference_loading(reference_ckpt: str, tmp_path) -> None:
    pixel = TaskCodec(CodecConfig(N=8, M=8, head="pixel", classifier="resnet18", num_classes=3))
    assert load_reference_classifier(pixel, reference_ckpt) == []
    ref = torch.load(reference_ckpt, weights_only=True)["state_dict"]
    assert torch.equal(pixel.classifier.model.layer1[0].conv1.weight, ref["classifier.model.layer1.0.conv1.weight"])
    latent = TaskCodec(CodecConfig(N=8, M=8, head="latent", classifier="resnet18", num_classes=3))
    assert load_reference_classifier(latent, reference_ckpt) == ["conv1.weight"]  # the adapted stem
    assert torch.equal(latent.classifier.fc.weight, ref["classifier.model.fc.weight"])
    wrong = TaskCodec(CodecConfig(N=8, M=8, head="pixel", classifier="resnet18", num_classes=7))
    with pytest.raises(CheckpointError, match="num_classes"):
        load_reference_classifier(wrong, reference_ckpt)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_reference_classifier(pixel, str(tmp_path / "junk.ckpt"))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_reference_classifier(pixel, str(tmp_path / "missing.ckpt"))
