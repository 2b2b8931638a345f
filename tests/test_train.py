"""train.py end to end: fast_dev_run, a real tiny fit with real coding, resume, DDP (slow)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CPU, DATA, ROOT, TINY_CODEC, compose_cfg
from omegaconf import open_dict

from lightning_modules.joint import JointCodecModule
from train import train


def test_fast_dev_run_default(cfg_train, tmp_path) -> None:
    with open_dict(cfg_train):
        cfg_train.trainer.fast_dev_run = True
    result = train(cfg_train)
    assert 0 <= result["test/acc"] <= 1
    assert result["test/bytes_per_image"] > 4  # real streams: header + z + y bytes
    assert Path(result["encoder"]).is_file() and Path(result["decoder"]).is_file()


def test_fit_logs_real_bytes_and_prints_jpeg_match(joint_run, capsys) -> None:
    assert joint_run["test/bytes_per_image"] > 0 and joint_run["test/est_bytes_per_image"] > 0
    metrics = (Path(joint_run["dir"]) / "csv" / "metrics.csv").read_text().splitlines()[0]
    for key in ("train/loss", "train/bpp", "train/acc", "val/acc", "val/bpp", "test/acc", "test/bytes_per_image"):
        assert key in metrics


def test_jpeg_match_reads_table(tmp_path) -> None:
    from train import jpeg_match

    table = tmp_path / "t.csv"
    table.write_text("codec,setting,bytes_per_image,top1\njpeg,q=10,500,0.40\njpeg,q=50,1200,0.60\njpeg,q=90,2000,0.70\n")
    assert "q=50" in jpeg_match(table, 0.55) and "1200" in jpeg_match(table, 0.55)
    assert "no JPEG setting reaches" in jpeg_match(table, 0.9)
    assert "no JPEG table" in jpeg_match(tmp_path / "missing.csv", 0.5)


def test_resume_from_checkpoint(cfg_train, tmp_path) -> None:
    train(cfg_train)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.is_file()
    step = torch.load(last, weights_only=True)["global_step"]
    cfg2 = compose_cfg(
        "train.yaml",
        [*DATA, *TINY_CODEC, *CPU, "logger=csv", "trainer.max_epochs=2", "trainer.limit_train_batches=2",
         "trainer.limit_val_batches=1", "test=false", "export=false", f"ckpt_path={last}"],
        tmp_path / "resumed",
    )  # fmt: skip
    result = train(cfg2)
    resumed = torch.load(result["final_ckpt"], weights_only=True)
    assert resumed["global_step"] == 2 * step  # one more epoch of the same size
    rows = list(csv.DictReader((tmp_path / "resumed" / "csv" / "metrics.csv").open()))
    assert {r["epoch"] for r in rows} == {"1"}  # epoch 0 was restored, not trained again


def test_checkpoint_loads_after_cdf_update(cfg_train, tmp_path) -> None:
    """CompressAI's CDF buffers change size on update(); checkpoints must load either way."""
    import hydra

    module: JointCodecModule = hydra.utils.instantiate(cfg_train.model)
    module.model.update(force=True)
    state = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "pytorch-lightning_version": "2.6.0"}
    torch.save(state, tmp_path / "updated.ckpt")
    loaded = JointCodecModule.load_from_checkpoint(tmp_path / "updated.ckpt")
    assert torch.equal(loaded.model.gaussian_conditional._quantized_cdf, module.model.gaussian_conditional._quantized_cdf)


def test_sweep_config_multirun(reference_ckpt, tmp_path) -> None:
    """`experiment=lambda_sweep` is a Hydra multirun: one run (and one export) per λ."""
    cmd = [sys.executable, str(ROOT / "train.py"), "experiment=lambda_sweep", "model.lmbda=0.5,2",
           f"model.reference_ckpt={reference_ckpt}",
           *DATA, *TINY_CODEC, *CPU, "logger=csv", "debug=fast", f"paths.log_dir={tmp_path}",
           f"jpeg_table={tmp_path}/none.csv"]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    exports = sorted(tmp_path.glob("lambda_sweep/multiruns/*/*/export/encoder-*.pt"))
    assert len(exports) == 2
    lmbdas = sorted(torch.load(e, weights_only=True)["meta"]["lmbda"] for e in exports)
    assert lmbdas == [0.5, 2.0]


@pytest.mark.slow
def test_ddp_two_processes_cpu(tmp_path) -> None:
    cmd = [sys.executable, str(ROOT / "train.py"), "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
           "trainer.sync_batchnorm=false", *DATA, *TINY_CODEC, "logger=csv", "trainer.max_epochs=1",
           "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "test=false",
           f"hydra.run.dir={tmp_path}", f"jpeg_table={tmp_path}/none.csv"]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=600)
    assert (tmp_path / "checkpoints" / "final.ckpt").is_file()
    assert list((tmp_path / "export").glob("decoder-*.pt"))


def test_distillation_term(reference_ckpt, tmp_path) -> None:
    """distill=a mixes (1-a)·CE with a·T²·KL to the frozen reference, which is never checkpointed."""
    import torch.nn.functional as F

    from taskcodec.errors import ConfigError
    from taskcodec.models import load_image_classifier

    module = JointCodecModule(N=8, M=8, num_classes=3, lmbda=2.0, reference_ckpt=reference_ckpt,
                              distill=0.25, distill_temperature=3.0)  # fmt: skip
    x, y = torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    out = module(x)
    losses = module._losses(out, x, y, 1.0, 0.0, teach=True)
    with torch.no_grad():
        teacher = load_image_classifier(reference_ckpt)(x)
    kd = F.kl_div(F.log_softmax(out["logits"] / 3, 1), F.softmax(teacher / 3, 1), reduction="batchmean")
    assert torch.allclose(losses["kd"], kd, atol=1e-6) and kd > 0
    expected = losses["bpp"] + 2.0 * (0.75 * losses["ce"] + 0.25 * 9 * kd)
    assert torch.allclose(losses["loss"], expected, atol=1e-5)
    assert "kd" not in module._losses(out, x, y, 1.0, 0.0)  # validation: plain CE
    assert not any("teacher" in k for k in module.state_dict())
    with pytest.raises(ConfigError, match="reference_ckpt"):
        JointCodecModule(N=8, M=8, num_classes=3, distill=0.5)
    with pytest.raises(ConfigError, match="distill"):
        JointCodecModule(N=8, M=8, num_classes=3, distill=1.5, reference_ckpt=reference_ckpt)


def test_fit_with_distillation_logs_kd(reference_ckpt, tmp_path) -> None:
    cfg = compose_cfg(
        "train.yaml",
        [*DATA, *TINY_CODEC, *CPU, "logger=csv", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
         "trainer.limit_val_batches=1", "test=false", f"model.reference_ckpt={reference_ckpt}", "model.distill=0.5",
         f"jpeg_table={tmp_path}/none.csv"],
        tmp_path,
    )  # fmt: skip
    result = train(cfg)
    assert "train/kd" in (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    state = torch.load(result["final_ckpt"], weights_only=True)["state_dict"]
    assert all(k.startswith("model.") for k in state)
    assert torch.load(result["encoder"], weights_only=True)["meta"] == {"lmbda": 1.0, "distill": 0.5}
    # evaluate.py keeps distilled runs apart from plain ones: their own curve
    from evaluate import evaluate

    ev = compose_cfg(
        "evaluate.yaml",
        [*DATA, f"classifier_ckpt={reference_ckpt}", f"output_dir={tmp_path}/eval", "wandb.mode=disabled",
         "baselines=null", f"codec_dirs=[{tmp_path}]"],
        tmp_path,
    )  # fmt: skip
    assert [r["codec"] for r in evaluate(ev)["rows"]] == ["none", "taskcodec-latent+kd"]


def test_reference_logs_train_accuracy(reference_ckpt) -> None:
    header = (Path(reference_ckpt).parents[1] / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/acc", "train/loss", "val/acc"} <= set(header)
