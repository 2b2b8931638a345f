"""The server side trained from packed latents: train.py's path, reset, and the frozen entropy stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import CPU, compose_cfg
from tiny_codec import SAMPLE, export_tiny

from lightning_modules.server import ServerModule
from taskcodec.adapt import server_parts
from taskcodec.cli import main
from train import train


@pytest.fixture(scope="module")
def packs(tmp_path_factory) -> dict:
    """A tiny split codec's export and its train/val packs of the sample data (18 + 6 images)."""
    tmp = tmp_path_factory.mktemp("server")
    _, enc, dec = export_tiny(tmp / "export")
    folders = {}
    for split in ("train", "val"):
        folders[split] = str(tmp / "packs" / split)
        args = ["pack", str(SAMPLE), "-m", str(enc), "-o", folders[split], "--split", split, "-q", "--threads", "1"]
        assert main(args) == 0
    return {**folders, "decoder": str(dec)}


def _state(modules) -> dict[str, torch.Tensor]:
    return {f"{k}.{n}": v.clone() for k, m in modules.items() for n, v in m.state_dict().items()}


def test_train_py_fits_the_server_from_packs(packs, tmp_path) -> None:
    cfg = compose_cfg(
        "train.yaml",
        ["experiment=server_packed", f"data.train={packs['train']}", f"data.val={packs['val']}",
         f"data.decoder={packs['decoder']}", "data.batch_size=4", *CPU, "logger=csv", "trainer.max_epochs=2"],
        tmp_path,
    )  # fmt: skip
    assert cfg.model.decoder == packs["decoder"]  # model.decoder follows data.decoder
    result = train(cfg)
    assert 0 <= result["test/acc"] <= 1 and result["test/loss"] > 0
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert {"train/loss", "train/acc", "val/acc", "test/acc"} <= set(header.split(","))

    fresh = ServerModule(packs["decoder"], reset="none")
    trained = torch.load(result["final_ckpt"], weights_only=False)["state_dict"]
    entropy = {k: v for k, v in trained.items() if k.startswith("codec.entropy.")}
    assert entropy and all(torch.equal(v, fresh.state_dict()[k]) for k, v in entropy.items())  # frozen
    g_s = [k for k in trained if k.startswith("codec.g_s.") and k.endswith("weight")]
    assert any(not torch.equal(trained[k], fresh.state_dict()[k]) for k in g_s)  # trained


def test_reset_reinitialises_server_parts_only(packs) -> None:
    kept = ServerModule(packs["decoder"], reset="none").codec
    torch.manual_seed(1)
    reset = ServerModule(packs["decoder"], reset="all").codec
    assert server_parts(reset) == ["g_s", "tail"]
    before = _state({name: getattr(kept, name) for name in server_parts(kept)})
    after = _state({name: getattr(reset, name) for name in server_parts(reset)})
    weights = [k for k in before if k.endswith("weight") and before[k].ndim > 1]  # convs and linears (random)
    assert weights and all(not torch.equal(before[k], after[k]) for k in weights)
    assert all(torch.equal(a, b) for a, b in zip(kept.entropy.state_dict().values(), reset.entropy.state_dict().values(), strict=True))
    assert not any(p.requires_grad for p in reset.entropy.parameters())

    y_hat = torch.zeros(2, *reset.latent_shape(64, 64))
    module = ServerModule(packs["decoder"])
    assert module(y_hat).shape == (2, 3)  # no datamodule: the padded image size is used


def test_server_packed_experiment_needs_packs(tmp_path) -> None:
    cfg = compose_cfg("train.yaml", ["experiment=server_packed"], tmp_path)
    assert cfg.data._target_.endswith("PackedLatentDataModule") and cfg.model._target_.endswith("ServerModule")
    assert cfg.test and not cfg.export
    assert Path(cfg.paths.root_dir).is_dir()
