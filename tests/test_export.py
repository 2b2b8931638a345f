"""Exports load with weights_only=True and without Lightning/Hydra, and decode like the model."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from taskcodec.cli import main as cli_main
from taskcodec.errors import CheckpointError
from taskcodec.export import export_checkpoint, load_decoder, load_encoder

NO_LIGHTNING = """
import sys, torch
from taskcodec.export import load_decoder, load_encoder
enc, meta = load_encoder(sys.argv[1])
dec, _ = load_decoder(sys.argv[2])
torch.manual_seed(0)
x = torch.rand(3, 3, 64, 64)
streams = enc.encode(x)
logits = dec.decode(streams)["logits"]
assert meta["family"] == "split" and len(meta["codec_id"]) == 16
bad = [m for m in sys.modules if m.split(".")[0] in ("pytorch_lightning", "lightning", "hydra", "omegaconf", "datamodules", "lightning_modules")]
assert not bad, bad
assert not hasattr(enc, "tail") and not hasattr(enc, "g_s")
assert not hasattr(dec, "g_a")
torch.save({"streams": streams, "logits": logits, "lmbda": meta["lmbda"]}, sys.argv[3])
"""


def test_export_pair_loads_without_lightning(joint_run, tmp_path) -> None:
    enc, dec = joint_run["encoder"], joint_run["decoder"]
    assert enc.split("encoder-")[1] == dec.split("decoder-")[1]  # same codec id
    for path in (enc, dec):
        torch.load(path, weights_only=True)
    subprocess.run([sys.executable, "-c", NO_LIGHTNING, enc, dec, str(tmp_path / "o.pt")], check=True)
    out = torch.load(tmp_path / "o.pt", weights_only=True)
    # the full model from the checkpoint decodes the same bytes to the same logits
    e, _ = load_encoder(enc)
    d, _ = load_decoder(dec)
    torch.manual_seed(0)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert e.encode(x) == out["streams"]
        # same labels; logits to float tolerance (another process may run other thread counts)
        logits = d.decode(out["streams"])["logits"]
        assert torch.equal(logits.argmax(1), out["logits"].argmax(1))
        torch.testing.assert_close(logits, out["logits"], rtol=0, atol=1e-5)
    assert out["lmbda"] == 0.03


def test_cli_export_and_info(joint_run, tmp_path, capsys) -> None:
    assert cli_main(["export", joint_run["final_ckpt"], "--out", str(tmp_path)]) == 0
    encs = list(tmp_path.glob("encoder-*.pt"))
    assert len(encs) == 1 and not list(tmp_path.glob("*.part"))
    assert cli_main(["info", str(encs[0])]) == 0
    assert "taskcodec-encoder" in capsys.readouterr().out


def test_export_errors(joint_run, reference_ckpt, tmp_path, capsys) -> None:
    with pytest.raises(CheckpointError, match="not a codec checkpoint"):
        export_checkpoint(reference_ckpt, tmp_path)
    with pytest.raises(CheckpointError, match="decoder file is needed|taskcodec-encoder"):
        load_decoder(joint_run["encoder"])
    truncated = tmp_path / "encoder-trunc.pt"
    truncated.write_bytes(open(joint_run["encoder"], "rb").read()[:1000])
    with pytest.raises(CheckpointError, match="cannot read"):
        load_encoder(truncated)
    blob = torch.load(joint_run["encoder"], weights_only=True)
    blob["version"] = 99
    torch.save(blob, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_encoder(tmp_path / "future.pt")
    assert cli_main(["export", str(tmp_path / "missing.ckpt")]) == 2
    assert "does not exist" in capsys.readouterr().err
