"""A new codec family is one module: registered here, it trains, exports, loads and codes with no
edits to export.py, the Lightning system or evaluation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_modules.joint import JointCodecModule
from taskcodec.evaluation import code_and_classify, evaluate_taskcodec
from taskcodec.export import codec_from_checkpoint, export_codec, load_decoder, load_encoder
from taskcodec.models import create_codec, list_codecs, register_codec
from taskcodec.models.base import TaskCodecBase
from taskcodec.models.entropy import FactorizedEntropy


@register_codec("test-pooled")
class PooledCodec(TaskCodecBase):
    """A deliberately small family: one strided conv, a factorized prior, a linear head."""

    encoder_parts = ("g_a", "entropy")
    decoder_parts = ("entropy", "head")

    def __init__(self, M: int = 4, num_classes: int = 3) -> None:
        super().__init__(dict(M=M, num_classes=num_classes))
        self.g_a = nn.Conv2d(3, M, 8, stride=8)
        self.entropy = FactorizedEntropy(M)
        self.head = nn.Linear(M, num_classes)
        self.analysis_stride, self.latent_channels = 8, M

    def analysis(self, x: Tensor) -> Tensor:
        return self.g_a(x)

    def synthesis(self, y_hat: Tensor, image_size: tuple[int, int]) -> dict[str, Tensor]:
        return {"logits": self.head(y_hat.mean((2, 3)))}


def test_new_family_trains_exports_and_codes(tmp_path) -> None:
    assert "test-pooled" in list_codecs()
    module = JointCodecModule(create_codec("test-pooled", M=4, num_classes=3), lmbda=0.5)
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    losses = module.loss(module(x), y, 32 * 32)
    losses["loss"].backward()
    assert module.codec.g_a.weight.grad is not None
    ckpt = {"taskcodec": {"family": "test-pooled", "config": module.codec.config,
                          "state_dict": module.codec.state_dict(), "meta": {"lmbda": 0.5}}}  # fmt: skip
    torch.save(ckpt, tmp_path / "run.ckpt")
    codec, meta = codec_from_checkpoint(tmp_path / "run.ckpt")
    enc_path, dec_path = export_codec(codec, tmp_path / "export", meta)
    enc, _ = load_encoder(enc_path)
    dec, dec_meta = load_decoder(dec_path)
    assert not hasattr(enc, "head") and not hasattr(dec, "g_a")
    res = code_and_classify(enc, dec, x)
    with torch.no_grad():
        codec.eval()
        torch.testing.assert_close(res["logits"], codec(x)["logits"], rtol=0, atol=1e-6)
    row = evaluate_taskcodec(enc, dec, (x.permute(0, 2, 3, 1) * 255).to(torch.uint8).numpy(), y.numpy(), meta=dec_meta)
    assert row["codec"] == "taskcodec-test-pooled" and row["setting"] == "lmbda=0.5"
    assert row["bytes_per_image"] >= 1
