"""``taskcodec adapt``: the whole workflow of a new server for a deployed client, in one place.

    pack (taskcodec.pack) -> train the server on the decoded latents (ServerModule, Lightning) -> export

This module owns the workflow because it trains, as ``train.py`` does; the plain steps it calls in
``taskcodec/`` (packing, building the server codec, exporting) never call back up. It reads the
client's export, and the decoder it starts from, once each, and passes the loaded dicts down.
A new verb of the same kind is a function like :func:`adapt` here plus a line in ``taskcodec/cli.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger

from datamodules.packed import PackedLatentDataModule
from lightning_modules.server import ServerModule
from taskcodec.adapt import export_server
from taskcodec.errors import ConfigError
from taskcodec.export import ENCODER_KIND, codec_from_export, read_export
from taskcodec.pack import open_source, pack, read_shard, shard_paths
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
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_error: Callable[[str, Exception], None] | None = None,
) -> dict:
    """A new server for an exported client on a user's own labelled images; returns the summary.

    The images are compressed once with the unchanged client into ``out_dir/packs/train``
    (resumable), a stratified ``holdout_per_class`` is held out for the reported accuracy, the
    server trains on the latents alone, and ``out_dir`` gets ``decoder-<client id>.pt`` (plus a copy
    of the encoder and ``adapt.json``). With ``init_decoder`` the server starts from that decoder's
    (new class layer); otherwise from scratch. ``on_error(name, error)``: unreadable images are
    reported to it and left out (``skipped`` in the summary); without it the first one stops the run.
    """
    if epochs < 1 or holdout_per_class < 0:
        raise ConfigError(f"adapt needs epochs >= 1 and holdout_per_class >= 0, got {epochs} and {holdout_per_class}")
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
    pl.seed_everything(seed, workers=True)
    data = PackedLatentDataModule(str(plan_dir), server_from, batch_size=batch_size,
                                  holdout_per_class=holdout_per_class, seed=seed)  # fmt: skip
    data.setup()
    module = ServerModule(server_from, lr=lr, reset="head" if init_decoder else "all",
                          num_classes=data.num_classes, server=server)  # fmt: skip
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=CSVLogger(str(out), name="logs"),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, deterministic=True,
        limit_val_batches=1.0 if holdout_per_class else 0,
    )  # fmt: skip
    t1 = time.perf_counter()
    trainer.fit(module, datamodule=data)
    train_s = time.perf_counter() - t1
    held = trainer.test(module, datamodule=data, verbose=False)[0] if holdout_per_class else {}
    summary = {
        "encoder": str(encoder), "init_decoder": init_decoder, "dataset": str(dataset), "kind": kind,
        "first_class": first_class, "num_classes": data.num_classes, "images": packed,
        "skipped": plan.get("skipped", []),
        "train_images": len(data.sets["train"]), "holdout_per_class": holdout_per_class,
        "holdout_top1": held.get("test/acc"), "epochs": epochs, "lr": lr, "seed": seed,
        "server": module.codec.config.get("server", "tail"), "pack_seconds": pack_s, "train_seconds": train_s,
        "record_bytes_per_image": record_bytes / max(1, packed),
    }  # fmt: skip
    decoder = export_server(module.codec, client_meta, out, data.class_names, data.class_words, encoder,
                            extra_meta={k: summary[k] for k in ("dataset", "first_class", "num_classes", "epochs", "holdout_top1")})  # fmt: skip
    summary["decoder"] = str(decoder)
    write_json(out / "adapt.json", summary)
    return summary
