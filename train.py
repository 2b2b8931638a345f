"""Train a model from the Hydra config: the light client by default, a joint codec or the reference classifier.

    python train.py                                   # the light client and its teacher (experiment=light: 3 stages)
    python train.py experiment=reference              # the reference classifier
    python train.py experiment=joint                  # one joint run: the split codec from scratch, default λ
    python train.py experiment=joint -m model.lmbda=0.01,0.03,0.1      # a λ sweep (one run per λ)
    python train.py experiment=split_sweep model.reference_ckpt=PATH   # the committed split sweep

One run: compose cfg -> instantiate datamodule, module, trainer -> fit -> test -> export (joint codec).
A config with ``stages`` (experiment=light) runs each stage as such a run, in order, in its own folder.
"""

from __future__ import annotations

import copy
import csv
import os
import time
from contextlib import nullcontext
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

os.environ.setdefault("TASKCODEC_ROOT", str(Path(__file__).resolve().parent))

from lightning_modules.joint import JointCodecModule  # noqa: E402
from lightning_modules.run_dir import finish_run, resume_point  # noqa: E402
from taskcodec.cost import classifier_macs, client_macs, encode_throughput, single_thread  # noqa: E402
from taskcodec.curves import bytes_at_accuracy, paired_difference  # noqa: E402
from taskcodec.errors import ConfigError, TaskcodecError  # noqa: E402
from taskcodec.evaluation import read_per_image  # noqa: E402
from taskcodec.export import export_checkpoint  # noqa: E402
from taskcodec.models import ImageClassifier, load_image_classifier  # noqa: E402
from taskcodec.provenance import write_json  # noqa: E402
from taskcodec.reference_table import data_mismatch, measure_reference_table  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "configs"


def instantiate(cfg: DictConfig, **kwargs):
    """``hydra.utils.instantiate``, re-raising taskcodec's own errors (a bad value) as themselves, not wrapped."""
    try:
        return hydra.utils.instantiate(cfg, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, TaskcodecError):
            raise e.__cause__ from None
        raise


def instantiate_group(cfg: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a config group such as ``callbacks`` or ``logger``."""
    return [instantiate(c) for c in (cfg or {}).values() if c and "_target_" in c]


def compare_with_table(table: Path, top1: float, nbytes: float, correct: list[bool] | None = None) -> list[str]:
    """Lines comparing a run with an evaluate.py table of the same classes and test images.

    The paired top-1 difference from the reference uses the table's per-image results (same
    images, same order); JPEG's bytes at this top-1 are interpolated on its frontier, never
    extrapolated.
    """
    if not table.is_file():
        return [f"no reference table at {table}; run evaluate.py (see README) to compare against the reference and JPEG"]
    rows = list(csv.DictReader(table.open()))
    lines = []
    per_image = table.with_name(table.stem + "_per_image.json")
    if correct is not None and per_image.is_file():
        ref = read_per_image(table.parent, table.stem).get("none|raw", [])
        if len(ref) == len(correct):
            d = paired_difference(correct, ref)
            lo, hi = d["bootstrap_ci95"]
            lines.append(f"paired top-1 difference from the reference: {100 * d['diff']:+.1f} pt (95% CI {100 * lo:+.1f} to {100 * hi:+.1f}, n={d['n']})")
        else:
            lines.append(f"{per_image} has {len(ref)} reference images, this run {len(correct)}: no paired difference")
    jpeg = [(float(r["bytes_per_image"]), float(r["top1"])) for r in rows if r["codec"] == "jpeg"]
    b = bytes_at_accuracy(jpeg, top1, strict=True) if jpeg else None
    if b is None:
        lines.append("JPEG's measured range does not contain this top-1: no ratio")
    else:
        lines.append(f"JPEG file bytes at this top-1: {b:.0f} B/image, {b / nbytes:.1f}x more than taskcodec")
    return lines


def run_reference_table(cfg: DictConfig, datamodule, out_dir: Path) -> tuple[Path | None, str | None]:
    """The table this run compares with, and a line saying where it came from when it is not ``cfg.reference_table``.

    ``reference_table`` is used when it is of this run's test images; otherwise the reference (this run's
    teacher, ``model.reference_ckpt``) and JPEG are measured now on the run's own test images, so the summary
    answers "how many fewer bytes than JPEG, on my data?" for any dataset.
    """
    if not cfg.get("reference_table"):
        return None, "reference_table=null: no paired difference and no JPEG ratio"
    table = Path(cfg.reference_table)
    why = data_mismatch(table, OmegaConf.to_container(cfg.data, resolve=True))
    if why is None:
        return table, None
    teacher = cfg.model.get("reference_ckpt")
    if not teacher:
        return None, (f"{why}, and this run has no teacher (model.reference_ckpt) to measure JPEG with: "
                      "run evaluate.py on this data for the paired difference and the JPEG ratio")  # fmt: skip
    test = datamodule.test_set
    path = measure_reference_table(load_image_classifier(str(teacher)), test.images, test.labels,
                                   out_dir / "reference_table")  # fmt: skip
    return path, f"{why}: the teacher and JPEG measured on this run's {len(test)} test images ({path.parent})"


def client_cost_line(model: JointCodecModule, datamodule) -> str:
    """The client's MACs against the reference's, and its encode speed against JPEG q=30 (one thread, test images)."""
    codec = copy.deepcopy(model.codec).cpu().eval()
    codec.update(force=True)
    ref = ImageClassifier(codec.config.get("classifier", "resnet18"), int(codec.config["num_classes"]))
    images = datamodule.test_set.images[:512]
    size = tuple(images.shape[1:3])  # both counted at the size the model reads (64 on Tiny ImageNet, 128 on Imagenette)
    share = client_macs(codec, size) / classifier_macs(ref, size)
    with single_thread():
        speed = encode_throughput(codec, images, repeats=1)
    return (f"client: {100 * share:.1f}% of the reference's MACs, encodes {speed['client_encode_images_per_s']:.0f} img/s "
            f"= {speed['client_encode_vs_jpeg']:.2f}x Pillow JPEG q=30 (one thread, {len(images)} test images)")  # fmt: skip


def check_run_config(cfg: DictConfig) -> None:
    """Refuse, before any training, the values that would otherwise fail only at the end of a long run."""
    table = cfg.get("reference_table")
    if table and Path(table).is_file():
        with Path(table).open() as f:
            header = next(csv.reader(f), [])
        missing = {"codec", "setting", "bytes_per_image", "top1"} - set(header)
        if missing:
            raise ConfigError(f"reference_table={table} is not an evaluate.py rate_accuracy.csv (no {sorted(missing)} "
                              "columns); point it at one, or set reference_table=null")  # fmt: skip


def train(cfg: DictConfig) -> dict:
    """Fit, test and export; returns the test metrics (and export paths) for callers and tests."""
    if cfg.get("stages"):
        raise ConfigError("this config has stages (experiment=light, the default): run it with train.py or "
                          "run_stages(cfg, overrides); for one run pick an experiment, e.g. experiment=joint")  # fmt: skip
    check_run_config(cfg)
    started = time.perf_counter()
    out_dir = Path(cfg.paths.output_dir)
    ckpt_path, finished = resume_point(out_dir, cfg.get("ckpt_path"), bool(cfg.get("resume")))
    if finished is not None:
        print(f"{out_dir} holds a finished run (result.json): nothing to resume")
        return finished
    pl.seed_everything(cfg.seed, workers=True)
    if ckpt_path and cfg.get("logger") and cfg.logger.get("csv") and not cfg.logger.csv.get("version"):
        # a resumed run logs into its own CSV folder: the CSV logger empties the folder it writes to, and
        # the earlier sessions' metrics.csv must survive for the learning curve (csv/**/metrics.csv)
        with open_dict(cfg):
            cfg.logger.csv.version = f"resumed_{time.strftime('%Y%m%d-%H%M%S')}"
    datamodule: pl.LightningDataModule = instantiate(cfg.data)
    model: pl.LightningModule = instantiate(cfg.model)
    callbacks, loggers = instantiate_group(cfg.get("callbacks")), instantiate_group(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
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
            correct = getattr(model, "test_correct", None) or None
            table, note = run_reference_table(cfg, datamodule, out_dir)
            lines += [note] if note else []
            if table is not None:
                lines += compare_with_table(table, result["test/acc"], result["test/bytes_per_image"], correct)
            lines.append(client_cost_line(model, datamodule))
        print("\n".join(["", "== taskcodec result (official val split) ==", *lines, f"outputs: {out_dir}"]))
        result["summary"] = lines
    result["wall_seconds"] = round(time.perf_counter() - started, 1)  # this invocation (a resumed run: this session)
    if trainer.is_global_zero:
        result = finish_run(out_dir, result["best_ckpt"], result)
    return result


def _stage_overrides(name: str, stage: DictConfig, cli: list[str], done: dict[str, dict], out: Path) -> list[str]:
    """The overrides one stage is composed with: its experiment and epochs, its own list, then the command line's."""
    own: list[str] = []
    for item in stage.get("overrides") or []:  # an item may be a list (a YAML alias of a shared list): flattened
        own += [str(x) for x in item] if isinstance(item, ListConfig) else [str(item)]
    resolved = []
    for o in own:  # KEY=@stage.field: that earlier stage's result field, e.g. model.reference_ckpt=@teacher.best_ckpt
        key, _, value = o.partition("=")
        if value.startswith("@"):
            ref, _, field = value[1:].partition(".")
            if ref not in done or field not in done[ref]:
                raise ConfigError(f"stage {name}: {o} names {value[1:]}, which no earlier stage's result has; "
                                  f"earlier stages: {sorted(done)}")  # fmt: skip
            value = str(done[ref][field])
        resolved.append(f"{key}={value}")
    keep_model = bool(stage.get("model_overrides", True))
    passed = [o for o in cli if keep_model or not o.lstrip("+~").startswith("model")]
    return [f"experiment={stage.experiment}", f"trainer.max_epochs={int(stage.epochs)}", *resolved, *passed,
            f"paths.output_dir={out / name}"]  # fmt: skip


def run_stages(cfg: DictConfig, cli: list[str]) -> dict:
    """Train ``cfg.stages`` in order, each a full run (fit, test, export) of its experiment in ``<output_dir>/<name>/``.

    ``cli`` is the command line's overrides: they reach every stage (``model.*`` ones only the stages
    with ``model_overrides: true``), except ``experiment`` and ``stages.*``, which this run consumed.
    A stage refers to an earlier stage's result with ``KEY=@stage.field``. The run's result is the last
    stage's, with every stage's under ``stages``; ``resume=true`` resumes each stage where it stopped.
    """
    out = Path(cfg.paths.output_dir)
    _, finished = resume_point(out, None, bool(cfg.get("resume")))
    if finished is not None:
        print(f"{out} holds a finished run (result.json): nothing to resume")
        return finished
    started = time.perf_counter()
    cli = [o for o in cli if not o.lstrip("+~").startswith(("experiment=", "stages", "hydra"))]
    done: dict[str, dict] = {}
    for name, stage in cfg.stages.items():
        overrides = _stage_overrides(str(name), stage, cli, done, out)
        # inside train.py's @hydra.main Hydra already has this config search path; a caller outside it gets one
        search = nullcontext() if GlobalHydra.instance().is_initialized() else hydra.initialize_config_dir(
            version_base="1.3", config_dir=str(CONFIGS))  # fmt: skip
        with search:
            stage_cfg = hydra.compose(config_name="train", overrides=overrides)
        (out / str(name) / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(stage_cfg, out / str(name) / ".hydra" / "config.yaml")
        print(f"== stage {name}: train.py {' '.join(overrides)}")
        done[str(name)] = train(stage_cfg)
    result = {**done[str(name)], "stages": done, "wall_seconds": round(time.perf_counter() - started, 1)}
    times = ", ".join(f"{k} {v['wall_seconds'] / 60:.1f} min" for k, v in done.items())
    print("\n".join(["", f"== taskcodec stages: {times} ({result['wall_seconds'] / 60:.1f} min in all)",
                     *result.get("summary", []), f"outputs: {out}"]))  # fmt: skip
    write_json(out / "result.json", result)
    return result


@hydra.main(version_base="1.3", config_path="configs", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    if cfg.get("stages"):
        from hydra.core.hydra_config import HydraConfig

        return run_stages(cfg, list(HydraConfig.get().overrides.task)).get("test/acc")
    return train(cfg).get("test/acc")


if __name__ == "__main__":
    main()
