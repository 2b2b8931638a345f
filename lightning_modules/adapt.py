"""``taskcodec adapt``: the whole workflow of a new server for a deployed client, in one place.

    pack (taskcodec.pack) [-> the teacher's logits] -> train the server on the decoded latents
    (ServerModule, Lightning), keeping the epoch of the best hold-out top-1 -> export

This module owns the workflow because it trains, as ``train.py`` does; the plain steps it calls in
``taskcodec/`` (packing, building the server codec, exporting) never call back up. It reads the
client's export, and the decoder it starts from, once each, and passes the loaded dicts down.
A new verb of the same kind is a function like :func:`adapt` here plus a line in ``taskcodec/cli.py``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from datamodules.packed import PackedLatentDataModule
from lightning_modules.server import ServerModule
from taskcodec.adapt import export_server, teacher_logits
from taskcodec.errors import ConfigError
from taskcodec.export import ENCODER_KIND, codec_from_export, read_export
from taskcodec.pack import open_source, pack, read_shard, shard_paths
from taskcodec.preprocessing import crop_fraction, input_size
from taskcodec.provenance import write_json


def adapt(
    encoder: str,
    dataset: str,
    out_dir: str,
    *,
    init_decoder: str | None = None,
    server: str | None = None,
    kind: str = "auto",
    num_classes: int | None = None,
    first_class: int = 0,
    holdout_per_class: int = 10,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    teacher: str | None = None,
    distill: float = 0.5,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_error: Callable[[str, Exception], None] | None = None,
) -> dict:
    """A new server for an exported client on a user's own labelled images; returns the summary.

    The images are compressed once with the unchanged client into ``out_dir/packs/train``
    (resumable), a stratified ``holdout_per_class`` is held out for the reported accuracy, the
    server trains on the latents alone, and ``out_dir`` gets ``decoder-<client id>.pt`` (plus a copy
    of the encoder and ``adapt.json``). With ``init_decoder`` the server starts from that decoder's
    (new class layer); otherwise from scratch. With a hold-out, the server of the epoch with the
    best hold-out top-1 is exported (as ``train.py`` keeps ``best.ckpt``); without one, the last.

    ``teacher``: a classifier checkpoint of the same classes (``train.py``'s, e.g. the new task's
    reference). Its logits on the packed images (as the client saw them) are computed once and the
    server learns ``(1 - distill)·CE + distill·T²·KL`` from them, as the light client's own server
    was trained; without it, CE alone. ``on_error(name, error)``: unreadable images are reported to
    it and left out (``skipped`` in the summary); without it the first one stops the run.
    """
    if epochs < 1 or holdout_per_class < 0:
        raise ConfigError(f"adapt needs epochs >= 1 and holdout_per_class >= 0, got {epochs} and {holdout_per_class}")
    if not 0 < distill <= 1:
        raise ConfigError(f"distill (the KL share of the loss with a teacher) must be in (0, 1], got {distill}")
    out = Path(out_dir)
    images = open_source(dataset, kind, "train", num_classes, first_class)
    client_blob = read_export(encoder)  # read once, used by every step below
    client, client_meta = codec_from_export(client_blob, ENCODER_KIND)
    server_from = client_blob
    if init_decoder is not None:
        server_from = read_export(init_decoder)
        if server_from["codec_id"] != client_meta["codec_id"]:
            raise ConfigError(f"{init_decoder} is not the decoder of {encoder} (model ids differ)")
    plan_dir = out / "packs" / "train"
    t0 = time.perf_counter()
    plan = pack(client, client_meta, images, plan_dir, str(dataset), "train", 1000,
                32, threads or 2, progress, names=False, on_error=on_error)  # fmt: skip
    packed = plan["count"] - len(plan.get("skipped", []))
    pack_s = time.perf_counter() - t0
    record_bytes = sum(len(e.record) for p in shard_paths(plan_dir) for e in read_shard(p).entries)
    soft, teacher_info = None, {}
    if teacher is not None:
        soft, teacher_info = teacher_logits(teacher, images, out / "packs", input_size(client_meta),
                                            plan.get("skipped", []), workers=threads or 2,
                                            crop_pct=crop_fraction(client_meta))  # fmt: skip
    pl.seed_everything(seed, workers=True)
    data = PackedLatentDataModule(str(plan_dir), server_from, batch_size=batch_size,
                                  holdout_per_class=holdout_per_class, seed=seed, teacher_logits=soft)  # fmt: skip
    data.setup()
    module = ServerModule(server_from, lr=lr, reset="head" if init_decoder else "all",
                          num_classes=data.num_classes, server=server, distill=distill if teacher else 0.0)  # fmt: skip
    best = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor="val/acc", mode="max",
                           save_top_k=1, save_weights_only=True, enable_version_counter=False)  # fmt: skip
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=CSVLogger(str(out), name="logs"),
        enable_checkpointing=bool(holdout_per_class), callbacks=[best] if holdout_per_class else [],
        enable_progress_bar=False, enable_model_summary=False, deterministic=True,
        limit_val_batches=1.0 if holdout_per_class else 0,
    )  # fmt: skip
    t1 = time.perf_counter()
    trainer.fit(module, datamodule=data)
    train_s = time.perf_counter() - t1
    best_epoch = None
    if holdout_per_class:  # the best hold-out epoch's server, then its weights file is not needed
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])
        best_epoch = int(state["epoch"])
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    held = trainer.test(module, datamodule=data, verbose=False)[0] if holdout_per_class else {}
    summary = {
        "encoder": str(encoder), "init_decoder": init_decoder, "dataset": str(dataset), "kind": kind,
        "first_class": first_class, "num_classes": data.num_classes, "images": packed,
        "skipped": plan.get("skipped", []),
        "train_images": len(data.sets["train"]), "holdout_per_class": holdout_per_class,
        "holdout_top1": held.get("test/acc"), "epochs": epochs, "best_epoch": best_epoch, "lr": lr, "seed": seed,
        "teacher": teacher, "distill": distill if teacher else 0.0, **teacher_info,
        "server": module.codec.config.get("server", "tail"), "pack_seconds": pack_s, "train_seconds": train_s,
        "record_bytes_per_image": record_bytes / max(1, packed),
    }  # fmt: skip
    decoder = export_server(module.codec, client_meta, out, data.class_names, data.class_words, encoder,
                            extra_meta={k: summary[k] for k in ("dataset", "first_class", "num_classes", "epochs", "holdout_top1", "distill")})  # fmt: skip
    summary["decoder"] = str(decoder)
    write_json(out / "adapt.json", summary)
    return summary
