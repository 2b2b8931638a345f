"""Rate-accuracy evaluation: reference classifier + standard codecs (+ taskcodec runs) -> one table.

    python evaluate.py classifier_ckpt=PATH                         # baselines only
    python evaluate.py classifier_ckpt=PATH codec_dirs='[logs/train/multiruns/X/*]'   # + a λ sweep
    python evaluate.py classifier_ckpt=PATH train_on_compressed='{codec: jpeg, setting: 10, epochs: 3}'
    python evaluate.py classifier_ckpt=PATH reuse_baselines=DIR extra_rows='[results/train_test_grid_10cls/finetuned_rows.json]'

Writes rate_accuracy.csv/.json, rate_accuracy.png, headline.json and provenance.json (command, git
revision, resolved config) to ``output_dir``, and logs the table and plot to W&B (offline by default).
"""

from __future__ import annotations

import glob
import json
import os
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

os.environ.setdefault("TASKCODEC_ROOT", str(Path(__file__).resolve().parent))

from lightning_modules.classifier import ClassifierModule  # noqa: E402
from taskcodec.baselines import DEFAULT_SWEEPS, available_codecs, make_codec  # noqa: E402
from taskcodec.cost import classifier_macs, jpeg_images_per_second, single_thread  # noqa: E402
from taskcodec.errors import CheckpointError, ConfigError  # noqa: E402
from taskcodec.evaluation import (  # noqa: E402
    COLUMNS,
    add_paired,
    codec_label,
    evaluate_baseline,
    evaluate_label,
    evaluate_taskcodec,
    headline,
    plot_client_frontier,
    plot_rate_accuracy,
    read_per_image,
    taskcodec_client_columns,
    write_table,
)
from taskcodec.export import load_decoder, load_encoder  # noqa: E402
from taskcodec.models import load_image_classifier  # noqa: E402
from taskcodec.provenance import run_provenance, write_json  # noqa: E402


def provenance(cfg: DictConfig, reference: dict | None = None) -> dict:
    """The exact command, git revision, resolved config and the table's reference that produced a result."""
    return run_provenance(config=OmegaConf.to_container(cfg, resolve=True), reference=reference)


def check_same_reference(where: str, theirs: str | None, ours: str) -> None:
    """Refuse rows measured against another reference: a table has exactly one."""
    if theirs != ours:
        raise ConfigError(
            f"{where} was measured against reference {theirs or '(unnamed: made before tables named their reference)'}, "
            f"this table's reference is {ours}; one table, one reference: re-measure those rows with this "
            "classifier_ckpt"
        )


def codec_exports(patterns: list[str]) -> list[tuple[Path, Path]]:
    """(encoder, decoder) pairs found in the given run/export directories or globs."""
    pairs = []
    for pattern in patterns:
        dirs = [d for d in sorted(glob.glob(str(pattern))) if Path(d).is_dir()] or [pattern]
        for d in map(Path, dirs):
            encs = sorted(d.glob("encoder-*.pt")) + sorted(d.glob("export/encoder-*.pt"))
            if not encs:
                raise CheckpointError(f"no encoder-*.pt in {d} or {d}/export; run `taskcodec export CKPT` first")
            for enc in encs:
                dec = enc.with_name(enc.name.replace("encoder-", "decoder-"))
                if not dec.is_file():
                    raise CheckpointError(f"{enc} has no matching {dec.name} beside it")
                pairs.append((enc, dec))
    return pairs


def check_distinct_labels(labels: list[tuple[Path, tuple[str, str]]]) -> None:
    """Two exports that would make the same (codec, setting) row cannot share a table: their rows and
    per-image results would be mixed up."""
    seen: dict[tuple[str, str], Path] = {}
    for path, label in labels:
        if label in seen:
            raise ConfigError(f"{seen[label]} and {path} both make the row {label[0]} {label[1]}; evaluate them "
                              "in separate tables (output_dir), or train them with settings that tell them apart")  # fmt: skip
        seen[label] = path


def load_pair(enc_path: Path, dec_path: Path):
    """(encoder, decoder, meta) of an export pair; ``meta`` is the client's, plus the decoder's
    ``adapted`` record when its server was retrained (``taskcodec adapt``), so its rows are labelled apart."""
    encoder, meta = load_encoder(enc_path)
    decoder, dec_meta = load_decoder(dec_path)
    if dec_meta.get("adapted"):
        meta = {**meta, "adapted": dec_meta["adapted"]}
    return encoder, decoder, meta


def finetune_classifier(ckpt: str, train_set, holdout_set, epochs: int, lr: float = 0.01, batch_size: int = 128,
                        seed: int = 42, root_dir: str | Path = ".", precision: str = "32-true") -> nn.Module:
    """The seeds' fine-tuning recipe: the reference checkpoint, SGD at ``lr``, ``epochs`` over ``train_set``.

    One recipe for every caller (``train_on_compressed`` here, the train x test grid in
    bench/train_test_grid.py), reseeded each time, so runs on differently coded images of the same
    train set differ only in those images. The sets are ArrayImageDatasets already passed through
    the codec; the hold-out is only Lightning's per-epoch validation here. A reference trained with an
    EMA (the strong references) starts from its EMA weights, which are what it was measured with.
    ``precision`` is
    Lightning's (``bf16-mixed``: autocast for the steps, fp32 weights, as the 100-class reference
    trained); the returned classifier is fp32 and is scored in fp32.
    """
    pl.seed_everything(seed, workers=True)
    module = ClassifierModule.load_from_checkpoint(ckpt, lr=lr, warmup_epochs=0.1)
    if module.ema is not None:  # the reference *is* the EMA of its weights: fine-tune those, not the live ones
        module.classifier.load_state_dict(module.ema.module.state_dict())
        module.ema = None  # and return what was fine-tuned (two epochs are too short for a new average)
    trainer = pl.Trainer(
        max_epochs=int(epochs), accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
        deterministic=True, default_root_dir=str(root_dir), enable_progress_bar=False, precision=precision,
    )  # fmt: skip
    trainer.fit(module, DataLoader(train_set, batch_size, shuffle=True), DataLoader(holdout_set, batch_size))
    return module.classifier.eval()


def codec_round_trip(codec):
    """``map_images`` function: real encoder -> real decoder, i.e. what a receiver of ``codec`` sees."""
    return lambda image: codec.encode(image).decoded


def finetune_on_compressed(cfg: DictConfig, datamodule, spec: DictConfig):
    """The seeds' regime: fine-tune the reference on train images passed through one codec setting."""
    codec = make_codec(spec.codec, spec.setting)
    tuned = finetune_classifier(
        cfg.classifier_ckpt, datamodule.train_set.map_images(codec_round_trip(codec)),
        datamodule.holdout_set.map_images(codec_round_trip(codec)), int(spec.get("epochs", 3)),
        spec.get("lr", 0.01), datamodule.batch_size, cfg.seed, cfg.output_dir,
    )  # fmt: skip
    return codec, tuned


def reused_baseline_rows(folder: Path, ref_id: str, labels) -> list[dict]:
    """The reference and standard-codec rows of an earlier evaluate.py output, with per-image results.

    Only valid for the same reference classifier and the same test images (checked: the reference
    id in its provenance, and the image count).
    """
    prov = json.loads((folder / "provenance.json").read_text())
    check_same_reference(str(folder), (prov.get("reference") or {}).get("id"), ref_id)
    per_image = read_per_image(folder)
    rows = [r for r in json.loads((folder / "rate_accuracy.json").read_text())
            if not r["codec"].startswith("taskcodec") and r["codec"] != "label"]  # fmt: skip
    for r in rows:
        r["correct"] = per_image[f"{r['codec']}|{r['setting']}"]
        if len(r["correct"]) != len(labels):
            raise ConfigError(f"{folder} has {len(r['correct'])} images per row, this run {len(labels)}; re-measure")
    print(f"reused {len(rows)} reference and baseline rows from {folder}")
    return rows


def missing_baseline_rows(cfg: DictConfig, rows: list[dict], classifier, images, labels) -> list[dict]:
    """Rows for each configured baseline setting not already in ``rows`` (e.g. reused ones), measured now."""
    have = {(r["codec"], r["setting"]) for r in rows}
    usable, new = set(available_codecs()), []
    for name, settings in (cfg.baselines or {}).items():
        if settings is None and not DEFAULT_SWEEPS.get(name):
            raise ConfigError(
                f"baselines.{name} has no default sweep; list its settings, e.g. "
                f"'baselines={{{name}: [...]}}' (see DEFAULT_SWEEPS in taskcodec/baselines/ for the format)"
            )
        sweep = OmegaConf.to_container(settings) if settings is not None else DEFAULT_SWEEPS[name]
        if name not in usable:
            if not any(r["codec"] == name for r in rows):
                print(f"skipping {name}: no encoder available here")
            continue
        for codec in (make_codec(name, setting) for setting in sweep):
            if (codec.name, codec.setting) in have:
                continue
            new.append(evaluate_baseline(codec, classifier, images, labels, cfg.batch_size))
            print(f"{new[-1]['codec']:>16} {new[-1]['setting']:>18}: {new[-1]['bytes_per_image']:8.1f} B  top-1 {new[-1]['top1']:.3f}")
    return new


def join_extra_rows(rows: list[dict], paths: list[Path], n: int, ref_id: str) -> list[dict]:
    """Add rows measured elsewhere (e.g. bench/train_test_grid.py's ``jpeg+finetuned``) to the table.

    Each file is a JSON list of table rows with per-image ``correct`` results on the same test
    images, so their paired differences mean the same as everyone else's; a row with a different
    number of images is refused. Rows of a codec the files bring replace that codec's earlier
    (e.g. reused) rows, so a re-made file never leaves stale points behind.
    """
    extra = []
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"extra_rows: {path} does not exist; make it first (e.g. bench/train_test_grid.py)")
        for r in json.loads(path.read_text()):
            check_same_reference(f"extra_rows: {path} row {r.get('codec')}|{r.get('setting')}", r.get("reference_id"), ref_id)
            correct = r.get("correct")
            if correct is None or r.get("n") != n or len(correct) != n:
                raise ConfigError(
                    f"extra_rows: {path} row {r.get('codec')}|{r.get('setting')} has n={r.get('n')} and "
                    f"{None if correct is None else len(correct)} per-image results, this run {n} images; "
                    "re-make it on the same test images (data.num_classes, limit_images)"
                )
            extra.append(r | {"correct": [c in (True, 1, "1") for c in correct]})
    codecs = {r["codec"] for r in extra}
    if extra:
        print(f"joined {len(extra)} rows of {sorted(codecs)} from {[str(p) for p in paths]}")
    return [r for r in rows if r["codec"] not in codecs] + extra


def evaluate(cfg: DictConfig) -> dict:
    started = time.perf_counter()
    pl.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.output_dir)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("test")
    if cfg.train_on_compressed:
        datamodule.setup("fit")
    test = datamodule.test_set
    n = cfg.limit_images or len(test)
    images, labels = test.images[:n], test.labels[:n]
    classifier = load_image_classifier(cfg.classifier_ckpt)
    if classifier.model.num_classes != datamodule.num_classes:
        raise ConfigError(
            f"classifier has {classifier.model.num_classes} classes but data.num_classes={datamodule.num_classes}"
        )

    ref_id = classifier.content_id  # the checkpoint is read once
    exports = codec_exports(list(cfg.codec_dirs or []))  # fail before the long baseline sweep
    loaded = [(enc_path, *load_pair(enc_path, dec_path)) for enc_path, dec_path in exports]
    check_distinct_labels([(p, codec_label(dec.family, dec.config, meta)) for p, _, dec, meta in loaded])
    if cfg.get("reuse_baselines"):
        rows = reused_baseline_rows(Path(cfg.reuse_baselines), ref_id, labels)
    else:
        rows = [evaluate_baseline(make_codec("none", None), classifier, images, labels, cfg.batch_size)]
    rows += missing_baseline_rows(cfg, rows, classifier, images, labels)
    rows = join_extra_rows(rows, [Path(p) for p in cfg.get("extra_rows") or []], len(labels), ref_id)

    # client cost: MACs against the reference's; encode speed against JPEG q=30 on the same images, one thread
    size = tuple(images.shape[1:3])
    ref_macs = classifier_macs(classifier, size)
    speed = images[: cfg.speed_images] if cfg.speed_images else None
    with single_thread():
        jpeg_per_s = jpeg_images_per_second(speed) if speed is not None else None
    rows.append(evaluate_label(classifier, images, labels, ref_macs, cfg.batch_size, speed, jpeg_per_s))
    for _, encoder, decoder, meta in loaded:
        row = evaluate_taskcodec(encoder, decoder, images, labels, cfg.batch_size, meta)
        row |= taskcodec_client_columns(encoder, ref_macs, size, speed, jpeg_per_s)
        rows.append(row)
        print(f"{row['codec']:>16} {row['setting']:>18}: {row['bytes_per_image']:8.1f} B  top-1 {row['top1']:.3f}")

    if cfg.train_on_compressed:
        codec, tuned = finetune_on_compressed(cfg, datamodule, cfg.train_on_compressed)
        row = evaluate_baseline(codec, tuned, images, labels, cfg.batch_size)
        row["codec"] = f"{codec.name}+finetuned"
        rows.append(row)

    add_paired(rows)
    csv_path, _ = write_table(rows, out_dir, "rate_accuracy")
    png = plot_rate_accuracy(rows, out_dir / "rate_accuracy.png", f"{datamodule.num_classes} classes, n={n}")
    plot_client_frontier(rows, out_dir / "client_frontier.png", title=f"{datamodule.num_classes} classes, n={n}")
    head = headline(rows)
    reference = {"id": ref_id, "checkpoint": cfg.classifier_ckpt, "top1": next(r["top1"] for r in rows if r["codec"] == "none"),
                 "macs": ref_macs, "jpeg_q30_encode_images_per_s_one_thread": jpeg_per_s}  # fmt: skip
    head["reference"] = reference
    write_json(out_dir / "headline.json", head)
    prov = provenance(cfg, reference) | {"wall_seconds": round(time.perf_counter() - started, 1)}
    write_json(out_dir / "provenance.json", prov)
    log_to_wandb(cfg, rows, png)
    print(f"table: {csv_path}\nplot: {png}\nheadline: {json.dumps(head, indent=1)}")
    return {"rows": rows, "headline": head, "csv": str(csv_path), "png": str(png)}


def log_to_wandb(cfg: DictConfig, rows: list[dict], png: Path) -> None:
    """One W&B run with the table, a bytes-vs-top-1 scatter and the PNG (offline unless told)."""
    if cfg.wandb.mode == "disabled":
        return
    import wandb

    run = wandb.init(
        project=cfg.wandb.project, mode=cfg.wandb.mode, dir=cfg.output_dir, job_type="evaluate",
        config=OmegaConf.to_container(cfg, resolve=True),
    )  # fmt: skip
    # the CSV's columns: reused rows carry every one, newly measured standard codecs no client columns
    table = wandb.Table(columns=COLUMNS, data=[[r.get(c) for c in COLUMNS] for r in rows])
    run.log(
        {
            "rate_accuracy/table": table,
            "rate_accuracy/plot": wandb.plot.scatter(table, "bytes_per_image", "top1", title="top-1 vs bytes/image"),
            "rate_accuracy/png": wandb.Image(str(png)),
        }
    )
    run.finish()


@hydra.main(version_base="1.3", config_path="configs", config_name="evaluate.yaml")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
