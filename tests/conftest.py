"""Shared fixtures: the Hydra configs composed once, overridden for CPU, tiny data and tmp paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "tiny-imagenet-sample"
SHARED_ZIP = ROOT.parent / "shared" / "data" / "tiny-imagenet-100.zip"
os.environ.setdefault("TASKCODEC_ROOT", str(ROOT))
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))

DATA = [
    f"data.root={SAMPLE}",
    "data.num_classes=3",
    "data.holdout_per_class=2",
    "data.batch_size=4",
    "data.num_workers=0",
]
TINY_CODEC = ["model.codec.M=8", "model.codec.N=16"]
CPU = ["trainer.accelerator=cpu", "trainer.devices=1", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1"]


def bench_module(name: str):
    """bench/<name>.py, imported by path (bench/ is scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose_cfg(config_name: str, overrides: list[str], tmp_path: Path) -> DictConfig:
    """Compose a config the way the scripts do, with outputs in ``tmp_path``.

    ``train.yaml`` without an ``experiment=`` is composed as one joint run (``experiment=joint``): the
    default, the light client's stages, is a sequence of such runs (``tests/test_stages.py``).
    """
    if config_name == "train.yaml" and not any(o.startswith("experiment=") for o in overrides):
        overrides = ["experiment=joint", *overrides]
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
        cfg = compose(config_name=config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path / "logs")
    return cfg


@pytest.fixture
def cfg_train(tmp_path: Path) -> DictConfig:
    """Joint codec, tiny, 1 epoch of 2 batches, CSV logger only."""
    return compose_cfg(
        "train.yaml",
        [*DATA, *TINY_CODEC, *CPU, "logger=csv", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
         "trainer.limit_val_batches=1", "trainer.limit_test_batches=2", f"reference_table={tmp_path}/none.csv"],
        tmp_path,
    )  # fmt: skip


@pytest.fixture(scope="session")
def reference_ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real (tiny-data) reference classifier checkpoint made by train.py experiment=reference."""
    from train import train

    tmp = tmp_path_factory.mktemp("reference")
    cfg = compose_cfg(
        "train.yaml",
        [*DATA, *CPU, "experiment=reference", "logger=csv", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
         "trainer.limit_val_batches=1", "test=false"],
        tmp,
    )  # fmt: skip
    return train(cfg)["final_ckpt"]


@pytest.fixture(scope="session")
def joint_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny joint-codec run with its checkpoint and exported encoder/decoder."""
    from train import train

    tmp = tmp_path_factory.mktemp("joint")
    cfg = compose_cfg(
        "train.yaml",
        [*DATA, *TINY_CODEC, *CPU, "logger=csv", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
         "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", f"reference_table={tmp}/none.csv"],
        tmp,
    )  # fmt: skip
    return {**train(cfg), "dir": str(tmp)}
