"""`python train.py`'s default: the light client's stages (teacher, features, task) as one command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CPU, DATA, compose_cfg
from omegaconf import OmegaConf

from taskcodec.errors import ConfigError
from train import _stage_overrides, run_stages, train

ROOT = Path(__file__).resolve().parents[1]


def test_the_default_is_the_light_client_after_its_teacher(tmp_path) -> None:
    cfg = compose_cfg("train.yaml", ["experiment=light"], tmp_path)
    assert list(cfg.stages) == ["teacher", "features", "task"]
    assert [cfg.stages[s].experiment for s in cfg.stages] == ["reference", "light_features", "light_task"]
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
        assert compose(config_name="train").stages == cfg.stages  # no experiment= on the command line: light
    with pytest.raises(ConfigError, match="experiment=joint"):
        train(cfg)  # one run of a staged config would silently train something else


def test_stage_overrides_resolve_earlier_results_and_keep_model_overrides_off_the_teacher(tmp_path) -> None:
    stage = OmegaConf.create({"experiment": "light_task", "epochs": 3,
                              "overrides": [["model.codec.kernel=3", "model.codec.act=relu"], "model.init_codec=@features.final_ckpt"]})  # fmt: skip
    cli = ["data.num_classes=3", "model.lmbda=0.5"]
    got = _stage_overrides("task", stage, cli, {"features": {"final_ckpt": "/r/features/final.ckpt"}}, tmp_path)
    assert got == ["experiment=light_task", "trainer.max_epochs=3", "model.codec.kernel=3", "model.codec.act=relu",
                   "model.init_codec=/r/features/final.ckpt", *cli, f"paths.output_dir={tmp_path / 'task'}"]  # fmt: skip
    teacher = OmegaConf.create({"experiment": "reference", "epochs": 2, "model_overrides": False, "overrides": []})
    assert "model.lmbda=0.5" not in _stage_overrides("teacher", teacher, cli, {}, tmp_path)
    assert "data.num_classes=3" in _stage_overrides("teacher", teacher, cli, {}, tmp_path)
    with pytest.raises(ConfigError, match="no earlier stage"):
        _stage_overrides("task", stage, cli, {}, tmp_path)


def test_stages_run_in_order_and_resume(tmp_path) -> None:
    """Teacher -> features -> task on tiny data: each stage trains from the one before, the last is exported."""
    cli = [*DATA, *CPU, "logger=csv", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
           "trainer.limit_test_batches=2", f"reference_table={tmp_path}/none.csv"]  # fmt: skip
    epochs = ["stages.teacher.epochs=1", "stages.features.epochs=1", "stages.task.epochs=1"]
    cfg = compose_cfg("train.yaml", ["experiment=light", *epochs, *cli], tmp_path / "run")
    result = run_stages(cfg, ["experiment=light", *epochs, *cli])
    run = tmp_path / "run"
    assert list(result["stages"]) == ["teacher", "features", "task"]
    for stage in result["stages"]:
        assert (run / stage / "result.json").is_file() and (run / stage / ".hydra" / "config.yaml").is_file()
    features = OmegaConf.load(run / "features" / ".hydra" / "config.yaml")
    task = OmegaConf.load(run / "task" / ".hydra" / "config.yaml")
    teacher_best = result["stages"]["teacher"]["best_ckpt"]
    assert features.model.reference_ckpt == teacher_best and features.model.objective == "features"
    assert task.model.reference_ckpt == teacher_best and task.model.freeze_client
    assert task.model.init_codec == result["stages"]["features"]["final_ckpt"]
    assert task.model.codec.channels == [8, 16, 32] and task.model.codec.entropy == "factorized"
    assert OmegaConf.load(run / "teacher" / ".hydra" / "config.yaml").trainer.precision == "bf16-mixed"
    assert "test/bytes_per_image" in result and "test/acc" not in result["stages"]["features"]  # stage 1: not tested
    assert Path(result["encoder"]).is_file() and Path(result["encoder"]).parent == run / "task" / "export"
    assert json.loads((run / "result.json").read_text())["test/acc"] == result["test/acc"]
    again = run_stages(compose_cfg("train.yaml", ["experiment=light", *epochs, *cli, "resume=true"], run), [])
    assert again["test/acc"] == result["test/acc"]  # finished: the stored result, nothing trained

    # bench/run_record.py (the default_10cls stage) records the whole run and each stage with its learning curve
    subprocess.run([sys.executable, str(ROOT / "bench" / "run_record.py"), str(run), "--out", str(tmp_path / "rec")],
                   check=True, cwd=ROOT, capture_output=True)  # fmt: skip
    assert json.loads((tmp_path / "rec" / "result.json").read_text())["stages"]["task"]["test/acc"] == result["test/acc"]
    for stage in ("teacher", "features", "task"):
        assert (tmp_path / "rec" / stage / "metrics.csv").is_file() and (tmp_path / "rec" / stage / "config.yaml").is_file()


def _image_folder(tmp_path: Path) -> list[str]:
    """A user's class-per-folder data: train and test trees of the sample's three classes."""
    from conftest import SAMPLE

    for wnid in sorted(p.name for p in (SAMPLE / "train").iterdir()):
        photos = sorted((SAMPLE / "train" / wnid).rglob("*.JPEG"))
        for k, photo in enumerate(photos):
            tree = "val" if k % 3 == 2 else "train"
            (tmp_path / tree / wnid).mkdir(parents=True, exist_ok=True)
            (tmp_path / tree / wnid / photo.name).write_bytes(photo.read_bytes())
    return ["data=image_folder", f"data.root={tmp_path / 'train'}", f"data.test_root={tmp_path / 'val'}",
            "data.num_classes=3", "data.image_size=32", "data.holdout_fraction=0.3", "data.batch_size=4",
            "data.num_workers=0"]  # fmt: skip


def _imagenette(tmp_path: Path) -> list[str]:
    """Imagenette's layout, official .tgz, at 32 pixels."""
    from test_imagenette import _files, _write_tgz

    tmp_path.mkdir(parents=True)
    archive = _write_tgz(tmp_path / "imagenette2-160.tgz", _files("imagenette2-160"))
    return ["data=imagenette", f"data.root={archive}", "data.num_classes=3", "data.size=32", "data.store_size=40",
            "data.holdout_per_class=2", "data.batch_size=4"]  # fmt: skip


@pytest.mark.parametrize("make_data", [_image_folder, _imagenette])
def test_the_default_runs_on_other_data_and_measures_jpeg_on_its_own_test_images(make_data, tmp_path) -> None:
    """The staged default with the teacher's recipe on each data config; no committed table matches, so JPEG
    and the reference are measured on the run's own test images with its own teacher."""
    data = make_data(tmp_path / "data")
    cli = [*data, *CPU, "logger=csv", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
           "stages.teacher.epochs=1", "stages.features.epochs=1", "stages.task.epochs=1"]  # fmt: skip
    cfg = compose_cfg("train.yaml", ["experiment=light", *cli], tmp_path / "run")
    result = run_stages(cfg, ["experiment=light", *cli])
    table = tmp_path / "run" / "task" / "reference_table"
    rows = (table / "rate_accuracy.csv").read_text().splitlines()
    assert rows[1].startswith("none,raw") and sum(r.startswith("jpeg,") for r in rows) == 10
    summary = "\n".join(result["summary"])
    assert "measured on this run's" in summary and "paired top-1 difference from the reference" in summary
    assert "JPEG" in summary.split("measured on this run's")[1]
    teacher = OmegaConf.load(tmp_path / "run" / "teacher" / ".hydra" / "config.yaml")
    assert teacher.data.augment_policy == "trivialaugment"  # the reference recipe's option reached this datamodule
