"""Train a model from the Hydra config: the joint codec by default, or the reference classifier.

    python train.py                                   # joint codec, default λ, 10 classes, CPU
    python train.py experiment=reference              # the reference classifier
    python train.py -m model.lmbda=0.5,1,2            # a λ sweep (one run per λ)
    python train.py experiment=lambda_sweep           # the committed sweep

compose cfg -> instantiate datamodule, module, trainer -> fit -> test -> export (joint codec).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

os.environ.setdefault("TASKCODEC_ROOT", str(Path(__file__).resolve().parent))

from lightning_modules.joint import JointCodecModule  # noqa: E402
from taskcodec.curves import bytes_at_accuracy  # noqa: E402
from taskcodec.export import export_checkpoint  # noqa: E402


def instantiate_group(cfg: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a config group such as ``callbacks`` or ``logger``."""
    return [hydra.utils.instantiate(c) for c in (cfg or {}).values() if c and "_target_" in c]


def jpeg_match(table: Path, top1: float) -> str:
    """Which JPEG quality first reaches ``top1``, with its bytes, from an evaluate.py table."""
    if not table.is_file():
        return f"no JPEG table at {table}; run evaluate.py (see README) to compare against JPEG"
    rows = [r for r in csv.DictReader(table.open()) if r["codec"] == "jpeg"]
    rows.sort(key=lambda r: float(r["bytes_per_image"]))
    reached = [r for r in rows if float(r["top1"]) >= top1]
    if not reached:
        best = rows[-1] if rows else None
        return "no JPEG setting reaches this top-1" + (f" (best: {best['setting']}, top-1 {float(best['top1']):.3f})" if best else "")
    r = reached[0]
    interp = bytes_at_accuracy([(float(x["bytes_per_image"]), float(x["top1"])) for x in rows], top1)
    return (
        f"JPEG {r['setting']} is the cheapest setting reaching it: {float(r['bytes_per_image']):.0f} B/image "
        f"(top-1 {float(r['top1']):.3f}); interpolated JPEG bytes at this top-1: {interp:.0f}"
    )


def train(cfg: DictConfig) -> dict:
    """Fit, test and export; returns the test metrics (and export paths) for callers and tests."""
    pl.seed_everything(cfg.seed, workers=True)
    datamodule: pl.LightningDataModule = hydra.utils.instantiate(cfg.data)
    model: pl.LightningModule = hydra.utils.instantiate(cfg.model)
    callbacks, loggers = instantiate_group(cfg.get("callbacks")), instantiate_group(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    out_dir = Path(cfg.paths.output_dir)
    final = out_dir / "checkpoints" / "final.ckpt"
    trainer.save_checkpoint(final)  # also under fast_dev_run, where callbacks save nothing
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    result: dict = {"final_ckpt": str(final), "best_ckpt": best or str(final)}

    if cfg.get("test"):
        # Lightning loads the best hold-out checkpoint itself; fast_dev_run has none.
        ckpt = "best" if best and not trainer.fast_dev_run else None
        result.update({k: float(v) for k, v in trainer.test(model, datamodule=datamodule, ckpt_path=ckpt)[0].items()})

    if isinstance(model, JointCodecModule) and cfg.get("export") and trainer.is_global_zero:
        enc, dec = export_checkpoint(result["best_ckpt"], out_dir / "export")
        result.update(encoder=str(enc), decoder=str(dec))

    if trainer.is_global_zero and "test/acc" in result:
        lines = [f"test top-1 {result['test/acc']:.4f} (top-5 {result.get('test/top5', float('nan')):.4f})"]
        if "test/bytes_per_image" in result:
            lines.append(
                f"real bytes/image {result['test/bytes_per_image']:.1f} "
                f"(estimated {result['test/est_bytes_per_image']:.1f})"
            )
            lines.append(jpeg_match(Path(cfg.jpeg_table), result["test/acc"]))
        print("\n".join(["", "== taskcodec result (official val split) ==", *lines, f"outputs: {out_dir}"]))
    return result


@hydra.main(version_base="1.3", config_path="configs", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    result = train(cfg)
    return result.get("test/acc")


if __name__ == "__main__":
    main()
