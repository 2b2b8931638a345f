"""Every config composes and instantiates (the GPU trainer only where a GPU exists)."""

from __future__ import annotations

import hydra
import pytest
import torch
from conftest import DATA, ROOT, compose_cfg
from omegaconf import OmegaConf

from lightning_modules.joint import JointCodecModule
from taskcodec.errors import ConfigError


def model_kwargs(cfg) -> dict:
    """The model config's arguments, to call the class directly (Hydra would wrap its errors)."""
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "_target_"}
    kwargs["codec"] = hydra.utils.instantiate(cfg.model.codec)
    return kwargs


@pytest.mark.parametrize("codec", ["split", "hyperprior"])
def test_codec_configs_instantiate(codec: str, tmp_path) -> None:
    cfg = compose_cfg("train.yaml", [*DATA, f"model/codec={codec}"], tmp_path)
    module = hydra.utils.instantiate(cfg.model)
    assert module.codec.family == codec and module.codec.config["num_classes"] == 3


# experiments on pack folders (data=packed) need real folders: tests/test_server.py runs them
EXPERIMENTS = sorted(
    p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml") if "override /data: packed" not in p.read_text()
)


@pytest.mark.parametrize("model", ["joint", "classifier"])
@pytest.mark.parametrize("trainer", ["default", "cpu", "ddp", "gpu"])
def test_train_config_instantiates(model: str, trainer: str, tmp_path) -> None:
    cfg = compose_cfg("train.yaml", [*DATA, f"model={model}", f"trainer={trainer}"], tmp_path)
    hydra.utils.instantiate(cfg.data)
    hydra.utils.instantiate(cfg.model)
    for group in ("callbacks", "logger"):
        for c in cfg[group].values():
            hydra.utils.instantiate(c)
    if trainer == "gpu" and not torch.cuda.is_available():
        assert cfg.trainer.accelerator == "gpu"  # composes; building it needs a GPU
        return
    if trainer == "ddp":
        cfg.trainer.accelerator = "cpu"
    hydra.utils.instantiate(cfg.trainer)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_instantiate(experiment: str, reference_ckpt: str, tmp_path) -> None:
    cfg = compose_cfg("train.yaml", [*DATA, f"experiment={experiment}"], tmp_path)
    if "reference_ckpt" in cfg.model:
        cfg.model.reference_ckpt = reference_ckpt
    if "init_codec" in cfg.model:  # a stage-2 experiment: its stage-1 checkpoint is tested in test_light.py
        cfg.model.init_codec = None
    module = hydra.utils.instantiate(cfg.model)
    assert int(module.hparams.get("num_classes", module.hparams.get("codec_config", {}).get("num_classes"))) == 3


def test_frozen_classifier_needs_reference(tmp_path) -> None:
    cfg = compose_cfg("train.yaml", [*DATA, "model/codec=hyperprior", "model.codec.head=pixel", "model.freeze=all"], tmp_path)
    with pytest.raises(ConfigError, match="reference_ckpt"):
        JointCodecModule(**model_kwargs(cfg))


def test_evaluate_config_composes(tmp_path) -> None:
    cfg = compose_cfg("evaluate.yaml", [*DATA, "classifier_ckpt=x.ckpt"], tmp_path)
    assert list(cfg.baselines.jpeg) == [1, 3, 5, 10, 20, 30, 50, 75, 90, 95]
    hydra.utils.instantiate(cfg.data)


def test_bad_lambda_rejected(tmp_path) -> None:
    cfg = compose_cfg("train.yaml", [*DATA, "model.lmbda=-1"], tmp_path)
    with pytest.raises(ConfigError, match="lmbda"):
        JointCodecModule(**model_kwargs(cfg))
