"""Every codec family: shapes, exact round trips through real bytes, sides, reference loading."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from taskcodec.bitstream import pack_record, unpack_record
from taskcodec.errors import BitstreamError, CheckpointError, ConfigError
from taskcodec.models import create_codec, list_codecs
from taskcodec.models.classifier import reference_weights

# One tiny configuration per family (and per variant that codes differently).
TINY = {
    "hyperprior-latent": ("hyperprior", dict(N=8, M=12, head="latent", num_classes=5)),
    "hyperprior-pixel": ("hyperprior", dict(N=8, M=12, head="pixel", num_classes=5)),
    "split-factorized": ("split", dict(M=8, N=16, split="layer3", num_classes=5)),
    "split-hyperprior": ("split", dict(M=8, N=16, split="layer2", downsample=1, entropy="hyperprior", z_channels=4, num_classes=5)),
}


def tiny(key: str):
    torch.manual_seed(0)
    family, cfg = TINY[key]
    return create_codec(family, **cfg)


def test_registry_lists_every_family() -> None:
    assert {"hyperprior", "split"} <= set(list_codecs())
    with pytest.raises(ConfigError, match="unknown codec family 'jpegx'.*registered"):
        create_codec("jpegx")


@pytest.mark.parametrize("key", TINY)
@pytest.mark.parametrize("size", [(64, 64), (50, 37)])
def test_shapes_any_size(key: str, size: tuple[int, int]) -> None:
    model = tiny(key).eval()
    x = torch.rand(2, 3, *size)
    out = model(x)
    assert out["logits"].shape == (2, 5)
    assert out["rate_bits"].shape == (2,) and (out["rate_bits"] > 0).all()
    assert out["y_hat"].shape == (2, *model.latent_shape(*size))
    if model.has_pixels:
        assert out["x_hat"].shape == x.shape and 0 <= out["x_hat"].min() and out["x_hat"].max() <= 1


@pytest.mark.parametrize("key", TINY)
def test_encode_decode_matches_rounded_forward(key: str) -> None:
    model = tiny(key).eval()
    model.update(force=True)
    x = torch.rand(3, 3, 50, 37)
    with torch.no_grad():
        ref = model(x)
        records = model.encode(x)
        dec = model.decode(records)
    assert torch.equal(dec["y_hat"], ref["y_hat"])
    assert torch.equal(dec["logits"].argmax(1), ref["logits"].argmax(1))
    torch.testing.assert_close(dec["logits"], ref["logits"], rtol=0, atol=1e-5)
    est = ref["rate_bits"] / 8
    real = torch.tensor([len(r) - 3 for r in records], dtype=torch.float32)  # 3 header bytes at 50x37
    assert (real - est).abs().max() < 3, (real, est)  # byte-granular coder: about 1 B over the estimate


def test_training_forward_uses_straight_through_rounding() -> None:
    for key in ("hyperprior-latent", "split-factorized"):
        model = tiny(key).train()
        x = torch.rand(2, 3, 64, 64, requires_grad=True)
        out = model(x)
        if key.startswith("hyperprior"):
            assert torch.equal(out["y_hat"], torch.round(out["y_hat"]))
        (out["logits"].sum() + out["rate_bits"].sum()).backward()
        assert x.grad is not None and x.grad.abs().sum() > 0  # gradients pass the rounding


DECODE_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from taskcodec.models import create_codec
torch.manual_seed(0)
m = create_codec("split", M=8, N=16, split="layer2", downsample=1, entropy="hyperprior", z_channels=4, num_classes=5).eval()
m.update(force=True)
records = torch.load(sys.argv[1], weights_only=True)
out = m.decode(records)
torch.save({"y_hat": out["y_hat"], "logits": out["logits"]}, sys.argv[2])
"""


def test_decode_in_another_process_with_one_thread_is_identical(tmp_path) -> None:
    torch.set_num_threads(2)
    model = tiny("split-hyperprior").eval()
    model.update(force=True)
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        records = model.encode(x)
        local = model.decode(records)
    torch.save(records, tmp_path / "records.pt")
    subprocess.run([sys.executable, "-c", DECODE_SCRIPT, str(tmp_path / "records.pt"), str(tmp_path / "out.pt")], check=True)
    remote = torch.load(tmp_path / "out.pt", weights_only=True)
    assert torch.equal(remote["y_hat"], local["y_hat"])
    assert torch.equal(remote["logits"].argmax(1), local["logits"].argmax(1))


def test_state_dict_loads_across_cdf_buffer_sizes() -> None:
    trained = tiny("split-hyperprior").eval()
    trained.update(force=True)  # CDF buffers grow
    fresh = tiny("split-hyperprior")
    fresh.load_state_dict(trained.state_dict())  # CompressAI's resizing, or this fails
    fresh.eval()
    x = torch.rand(2, 3, 64, 64)
    assert fresh.encode(x) == trained.encode(x)


def test_sides_hold_only_their_parts() -> None:
    enc = tiny("split-factorized").prune_to("encoder")
    dec = tiny("split-factorized").prune_to("decoder")
    assert hasattr(enc, "g_a") and not hasattr(enc, "tail") and not hasattr(enc, "g_s")
    assert hasattr(dec, "tail") and not hasattr(dec, "g_a")
    with pytest.raises(ConfigError, match="loaded as the decoder"):
        dec.encode(torch.rand(1, 3, 64, 64))
    # the client runs the classifier up to the split; the server holds none of those stages
    assert "layer3" in dict(enc.g_a.named_children()) and "layer4" not in dict(enc.g_a.named_children())
    assert not any(k.startswith(("layer1", "layer3", "conv1")) for k in dec.tail.model.state_dict())


def test_record_format() -> None:
    assert pack_record(64, 64, b"abc") == b"\x00abc"  # the common size costs one byte
    odd = pack_record(50, 300, b"xy")
    assert odd[0] == 0xFF and unpack_record(odd) == (50, 300, b"xy")
    assert unpack_record(b"\x00") == (64, 64, b"")
    with pytest.raises(BitstreamError, match="empty"):
        unpack_record(b"")
    with pytest.raises(BitstreamError, match="size code"):
        unpack_record(b"\x77abc")
    with pytest.raises(BitstreamError, match="truncated"):
        unpack_record(b"\xff\x80")
    with pytest.raises(BitstreamError, match="outside"):
        unpack_record(b"\xff\x00\x05")


def test_huge_claimed_image_is_refused_before_decoding() -> None:
    dec = tiny("split-factorized").eval()
    dec.update(force=True)
    for h, w in ((60000, 60000), (8192, 8192)):  # too many latent symbols; too many pixels
        with pytest.raises(BitstreamError, match="over the decoder's limit"):
            dec.decode([pack_record(h, w, b"\x01\x02")])


def test_appended_garbage_is_an_error() -> None:
    model = tiny("split-factorized").eval()
    model.update(force=True)
    record = model.encode(torch.rand(1, 3, 64, 64))[0]
    with pytest.raises(BitstreamError, match="after the coded data"):
        model.decode([record + b"\x5a" * 12])


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.rand(1, 1, 32, 32), "RGB"),
        (torch.rand(0, 3, 32, 32), "empty batch"),
        (torch.full((1, 3, 32, 32), float("nan")), "NaN"),
        (torch.rand(1, 3, 32, 32) * 255, r"\[0, 1\]"),
        ((torch.rand(1, 3, 32, 32) * 255).to(torch.uint8), "dtype"),
    ],
)
def test_bad_tensors(bad, match) -> None:
    model = tiny("split-factorized").eval()
    model.update(force=True)
    with pytest.raises(ConfigError, match=match):
        model.encode(bad)


def test_bad_configs() -> None:
    with pytest.raises(ConfigError, match="head"):
        create_codec("hyperprior", head="audio")
    with pytest.raises(ConfigError, match="num_stages"):
        create_codec("hyperprior", num_stages=0)
    with pytest.raises(ConfigError, match="ResNet-style"):
        create_codec("hyperprior", N=8, M=8, classifier="vit_tiny_patch16_224", num_classes=3)
    with pytest.raises(ConfigError, match="not a stage.*layer4"):
        create_codec("split", split="layer9")
    with pytest.raises(ConfigError, match="entropy"):
        create_codec("split", entropy="laplace")
    with pytest.raises(ConfigError, match="cannot be split"):
        create_codec("split", classifier="vit_tiny_patch16_224", split=1, num_classes=3)


def test_split_any_timm_stage() -> None:
    """Not only ResNet names: an EfficientNet split inside its block list works too."""
    torch.manual_seed(0)
    m = create_codec("split", classifier="efficientnet_b0", split="blocks.2", M=4, N=8, num_classes=3).eval()
    m.update(force=True)
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(m.decode(m.encode(x))["y_hat"], m(x)["y_hat"])


def test_reference_loading(reference_ckpt: str, tmp_path) -> None:
    ref = {"classifier.model." + k: v for k, v in reference_weights(reference_ckpt)[2].items()}
    pixel = create_codec("hyperprior", N=8, M=8, head="pixel", num_classes=3)
    assert pixel.init_from_reference(reference_ckpt) == []
    assert torch.equal(pixel.classifier.model.layer1[0].conv1.weight, ref["classifier.model.layer1.0.conv1.weight"])
    latent = create_codec("hyperprior", N=8, M=8, head="latent", num_classes=3)
    assert latent.init_from_reference(reference_ckpt) == ["conv1.weight"]  # the adapted stem
    split = create_codec("split", M=8, N=16, split="layer2", num_classes=3)
    split.init_from_reference(reference_ckpt)
    assert torch.equal(split.g_a.layer1[0].conv1.weight, ref["classifier.model.layer1.0.conv1.weight"])
    assert torch.equal(split.tail.model.layer3[0].conv1.weight, ref["classifier.model.layer3.0.conv1.weight"])
    assert torch.equal(split.tail.model.fc.weight, ref["classifier.model.fc.weight"])
    wrong = create_codec("split", M=8, N=16, num_classes=7)
    with pytest.raises(CheckpointError, match="num_classes"):
        wrong.init_from_reference(reference_ckpt)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        pixel.init_from_reference(str(tmp_path / "junk.ckpt"))
    with pytest.raises(CheckpointError, match="does not exist"):
        pixel.init_from_reference(str(tmp_path / "missing.ckpt"))


def test_reference_is_the_ema_of_its_weights(reference_ckpt: str) -> None:
    """experiment=reference validates and tests an EMA of the weights: that copy is the reference."""
    ckpt = torch.load(reference_ckpt, weights_only=True)
    assert ckpt["hyper_parameters"]["ema_decay"] > 0
    live = ckpt["state_dict"]["classifier.model.fc.weight"]
    ema = ckpt["state_dict"]["ema.module.model.fc.weight"]
    assert not torch.equal(live, ema)  # two training steps moved them apart
    assert torch.equal(reference_weights(reference_ckpt)[2]["fc.weight"], ema)
