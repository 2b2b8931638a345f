"""train.py end to end: fast_dev_run, a real tiny fit with real coding, resume, DDP (slow)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
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
    assert result["test/bytes_per_image"] >= 1  # real records: the size byte + the range-coded payload
    assert result["test/payload_bytes_per_image"] == result["test/bytes_per_image"] - 1  # 64x64: 1 header byte
    assert Path(result["encoder"]).is_file() and Path(result["decoder"]).is_file()


def test_fit_logs_real_bytes_and_prints_jpeg_match(joint_run, capsys) -> None:
    assert joint_run["test/bytes_per_image"] > 0 and joint_run["test/est_bytes_per_image"] > 0
    metrics = (Path(joint_run["dir"]) / "csv" / "metrics.csv").read_text().splitlines()[0]
    for key in ("train/loss", "train/bpp", "train/acc", "val/acc", "val/bpp", "test/acc", "test/bytes_per_image"):
        assert key in metrics


def test_compare_with_table(tmp_path) -> None:
    from train import compare_with_table

    table = tmp_path / "t.csv"
    table.write_text("codec,setting,bytes_per_image,top1\nnone,raw,12288,0.75\njpeg,q=10,500,0.40\njpeg,q=50,1200,0.60\njpeg,q=90,2000,0.70\n")
    (tmp_path / "t_per_image.json").write_text('{"none|raw": "1110"}')
    lines = compare_with_table(table, 0.60, 100.0, [True, True, False, False])
    assert lines[0].startswith("paired top-1 difference from the reference: -25.0 pt")
    assert "1200 B/image, 12.0x more" in lines[1]
    assert "no ratio" in compare_with_table(table, 0.9, 100.0)[0]
    assert "no reference table" in compare_with_table(tmp_path / "missing.csv", 0.5, 1.0)[0]


def test_resume_from_checkpoint(cfg_train, tmp_path) -> None:
    first = train(cfg_train)
    ckpts = tmp_path / "checkpoints"
    assert not (ckpts / "last.ckpt").exists()  # a finished run keeps final.ckpt (the full state), not last.ckpt
    assert (ckpts / "best.ckpt").is_file() and first["best_ckpt"] == str(ckpts / "best.ckpt")
    step = torch.load(ckpts / "final.ckpt", weights_only=True)["global_step"]
    cfg2 = compose_cfg(
        "train.yaml",
        [*DATA, *TINY_CODEC, *CPU, "logger=csv", "trainer.max_epochs=2", "trainer.limit_train_batches=2",
         "trainer.limit_val_batches=1", "test=false", "export=false", f"ckpt_path={ckpts / 'final.ckpt'}"],
        tmp_path / "resumed",
    )  # fmt: skip
    result = train(cfg2)
    resumed = torch.load(result["final_ckpt"], weights_only=True)
    assert resumed["global_step"] == 2 * step  # one more epoch of the same size
    (log,) = (tmp_path / "resumed" / "csv").glob("resumed_*/metrics.csv")  # a resumed run logs into its own folder
    rows = list(csv.DictReader(log.open()))
    assert {r["epoch"] for r in rows} == {"1"}  # epoch 0 was restored, not trained again


def test_resume_true_continues_an_interrupted_run_and_skips_a_finished_one(tmp_path) -> None:
    """resume=true, what the pipeline's stages pass: last.ckpt without result.json is a run a session
    ended; result.json is a finished run; a folder whose run was removed trains from scratch."""
    args = [*DATA, *TINY_CODEC, *CPU, "logger=csv", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
            "test=false", "export=false", "resume=true"]  # fmt: skip
    run = tmp_path / "run"
    first = train(compose_cfg("train.yaml", [*args, "trainer.max_epochs=1"], run))
    ckpts = run / "checkpoints"
    step = torch.load(ckpts / "final.ckpt", weights_only=True)["global_step"]
    # a finished run: nothing is trained again, the stored result comes back
    again = train(compose_cfg("train.yaml", [*args, "trainer.max_epochs=2"], run))
    assert again["final_ckpt"] == first["final_ckpt"] and torch.load(ckpts / "final.ckpt", weights_only=True)["global_step"] == step
    # the same run stopped by the end of a session after its first epoch: only last.ckpt is there
    (ckpts / "final.ckpt").rename(ckpts / "last.ckpt")
    (run / "result.json").unlink()
    train(compose_cfg("train.yaml", [*args, "trainer.max_epochs=2"], run))
    assert torch.load(ckpts / "final.ckpt", weights_only=True)["global_step"] == 2 * step  # resumed, not restarted
    # the user removes the finished run to train it again: it starts over
    for name in ("final.ckpt", "best.ckpt"):
        (ckpts / name).unlink()
    (run / "result.json").unlink()
    train(compose_cfg("train.yaml", [*args, "trainer.max_epochs=1"], run))
    assert torch.load(ckpts / "final.ckpt", weights_only=True)["global_step"] == step


class SessionEnds(Exception):
    pass


class EndSessionAfterFirstEpoch(pl.Callback):
    """What the end of a session does to a run: it stops after an epoch's checkpoint, mid-schedule."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 1:
            raise SessionEnds


@pytest.mark.parametrize("experiment", ["joint", "reference"])
def test_a_resumed_run_ends_with_the_weights_of_one_that_never_stopped(tmp_path, experiment) -> None:
    """Shuffles, augmentations and quantisation noise continue where the stopped run left them
    (the generators' states are in the checkpoint), so a run split across sessions reproduces."""
    args = [*DATA, *CPU, f"experiment={experiment}", "logger=csv", "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=1", "test=false", "export=false", "resume=true", "trainer.max_epochs=2"]  # fmt: skip
    args += TINY_CODEC if experiment == "joint" else []
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(compose_cfg("train.yaml", args, whole))
    with pytest.raises(SessionEnds):
        train(compose_cfg("train.yaml", [*args, f"+callbacks.session_end._target_={__name__}.EndSessionAfterFirstEpoch"], split))
    assert (split / "checkpoints" / "last.ckpt").is_file() and not (split / "result.json").exists()
    train(compose_cfg("train.yaml", args, split))  # the next session: resume=true picks up last.ckpt
    a, b = (torch.load(run / "checkpoints" / "final.ckpt", weights_only=True)["state_dict"] for run in (whole, split))
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_checkpoint_payload_is_plain(joint_run) -> None:
    """The checkpoint carries {family, config, state_dict, meta}; export reads only that."""
    ckpt = torch.load(joint_run["final_ckpt"], weights_only=True)
    payload = ckpt["taskcodec"]
    assert payload["family"] == "split" and payload["config"]["M"] == 8
    assert set(payload["state_dict"]) == {k[len("codec."):] for k in ckpt["state_dict"]}
    assert payload["meta"]["lmbda"] == 0.03


def test_sweep_config_multirun(reference_ckpt, tmp_path) -> None:
    """`experiment=lambda_sweep` is a Hydra multirun: one run (and one export) per λ."""
    cmd = [sys.executable, str(ROOT / "train.py"), "experiment=lambda_sweep", "model.lmbda=0.5,2",
           f"model.reference_ckpt={reference_ckpt}",
           *DATA, *TINY_CODEC, *CPU, "logger=csv", "debug=fast", f"paths.log_dir={tmp_path}",
           f"reference_table={tmp_path}/none.csv"]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    exports = sorted(tmp_path.glob("lambda_sweep/multiruns/*/*/export/encoder-*.pt"))
    assert len(exports) == 2
    lmbdas = sorted(torch.load(e, weights_only=True)["meta"]["lmbda"] for e in exports)
    assert lmbdas == [0.5, 2.0]


@pytest.mark.slow
def test_ddp_two_processes_cpu(tmp_path) -> None:
    cmd = [sys.executable, str(ROOT / "train.py"), "experiment=joint", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
           "trainer.sync_batchnorm=false", *DATA, *TINY_CODEC, "logger=csv", "trainer.max_epochs=1",
           "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "test=false",
           f"hydra.run.dir={tmp_path}", f"reference_table={tmp_path}/none.csv"]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=600)
    assert (tmp_path / "checkpoints" / "final.ckpt").is_file()
    assert list((tmp_path / "export").glob("decoder-*.pt"))


def test_distillation_term(reference_ckpt, tmp_path) -> None:
    """distill=a mixes (1-a)·CE with a·T²·KL to the frozen reference, which is never checkpointed."""
    import torch.nn.functional as F

    from taskcodec.errors import ConfigError
    from taskcodec.models import create_codec, load_image_classifier

    def codec():
        return create_codec("split", M=8, N=16, num_classes=3)

    module = JointCodecModule(codec(), lmbda=2.0, reference_ckpt=reference_ckpt, distill=0.25, distill_temperature=3.0)
    x, y = torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    out = module(x)
    with torch.no_grad():
        teacher = load_image_classifier(reference_ckpt)(x)
    losses = module.loss(out, y, 64 * 64, teacher)
    kd = F.kl_div(F.log_softmax(out["logits"] / 3, 1), F.softmax(teacher / 3, 1), reduction="batchmean")
    assert torch.allclose(losses["kd"], kd, atol=1e-6) and kd > 0
    expected = out["rate_bits"].mean() / 4096 + 2.0 * (0.75 * losses["ce"] + 0.25 * 9 * kd)
    assert torch.allclose(losses["loss"], expected, atol=1e-5)
    assert "kd" not in module.loss(out, y, 64 * 64)  # validation: plain CE
    assert not any("teacher" in k for k in module.state_dict())
    with pytest.raises(ConfigError, match="reference_ckpt"):
        JointCodecModule(codec(), distill=0.5)
    with pytest.raises(ConfigError, match="distill"):
        JointCodecModule(codec(), distill=1.5, reference_ckpt=reference_ckpt)


def test_fit_with_distillation_logs_kd(reference_ckpt, tmp_path) -> None:
    cfg = compose_cfg(
        "train.yaml",
        [*DATA, *TINY_CODEC, *CPU, "logger=csv", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
         "trainer.limit_val_batches=1", "test=false", f"model.reference_ckpt={reference_ckpt}", "model.distill=0.5",
         f"reference_table={tmp_path}/none.csv"],
        tmp_path,
    )  # fmt: skip
    result = train(cfg)
    assert "train/kd" in (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    state = torch.load(result["final_ckpt"], weights_only=True)["state_dict"]
    assert all(k.startswith("codec.") for k in state)
    meta = torch.load(result["encoder"], weights_only=True)["meta"]
    assert meta["lmbda"] == 0.03 and meta["distill"] == 0.5 and len(meta["class_names"]) == 3
    assert meta["preprocessing"]["input_size"] == [3, 64, 64]  # what the model was trained on, for compress
    # evaluate.py keeps distilled runs apart from plain ones: their own curve
    from evaluate import evaluate

    ev = compose_cfg(
        "evaluate.yaml",
        [*DATA, f"classifier_ckpt={reference_ckpt}", f"output_dir={tmp_path}/eval", "wandb.mode=disabled",
         "baselines=null", f"codec_dirs=[{tmp_path}]"],
        tmp_path,
    )  # fmt: skip
    assert [r["codec"] for r in evaluate(ev)["rows"]] == ["none", "label", "taskcodec-split-layer4-factorized+kd"]


def test_reference_logs_train_accuracy(reference_ckpt) -> None:
    header = (Path(reference_ckpt).parents[1] / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/acc", "train/loss", "val/acc"} <= set(header)


def test_no_reference_table_and_client_cost_line(tmp_path, capsys) -> None:
    """`reference_table=null` skips the comparison instead of crashing after training; the run prints its client cost."""
    from train import train

    cfg = compose_cfg("train.yaml", [*DATA, *TINY_CODEC, *CPU, "logger=csv", "trainer.max_epochs=1",
                                     "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
                                     "trainer.limit_test_batches=1", "reference_table=null"], tmp_path)  # fmt: skip
    train(cfg)
    out = capsys.readouterr().out
    assert "reference_table=null" in out
    assert "of the reference's MACs" in out and "x Pillow JPEG q=30" in out


def test_values_that_would_fail_at_the_end_are_refused_first(tmp_path) -> None:
    from taskcodec.errors import ConfigError
    from train import train

    bad = tmp_path / "table.csv"
    bad.write_text("a,b\n1,2\n")
    base = [*DATA, *TINY_CODEC, *CPU, "logger=csv", "trainer.max_epochs=1"]
    with pytest.raises(ConfigError, match="not an evaluate.py rate_accuracy.csv"):
        train(compose_cfg("train.yaml", [*base, f"reference_table={bad}"], tmp_path / "a"))
    with pytest.raises(ConfigError, match="does not exist"):
        train(compose_cfg("train.yaml", [*base, f"ckpt_path={tmp_path}/nope.ckpt"], tmp_path / "b"))
    assert not list(tmp_path.rglob("*.ckpt"))  # refused before any training
