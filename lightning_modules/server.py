"""The server side of an exported codec, trained on decoded latents ``(y_hat, label)`` alone.

A deployed server only ever sees the bytes; ``taskcodec pack`` turns a labelled dataset into those
bytes once, and :class:`datamodules.packed.PackedLatentDataModule` serves the latents its entropy
stage rebuilds from them. This system trains the decoder's other parts (``codec.synthesis``: for
the split family ``g_s`` and the classifier's tail) on them with cross-entropy. The entropy stage
stays exactly as exported (frozen, in eval mode), so the retrained server still decodes every
record the unchanged client writes.

:func:`adapt` is ``taskcodec adapt``: pack a user's labelled images with an exported client, train
a server for their classes on the latents, and export it as a decoder for ``taskcodec classify``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_modules.classifier import ClassificationSteps, warmup_cosine
from taskcodec.adapt import server_codec, server_parts
from taskcodec.errors import ConfigError


class ServerModule(ClassificationSteps):
    """Trains ``codec.synthesis(y_hat, image_size)`` -> logits of an exported decoder with AdamW.

    Args:
        decoder: ``decoder-<id>.pt`` from ``taskcodec export`` (the model the packs were made with),
            or its ``encoder-<id>.pt`` when the server starts fresh (``reset="all"``).
        lr: peak learning rate (linear warm-up over 0.3 epoch, then cosine decay).
        weight_decay: AdamW weight decay.
        reset: ``"all"`` re-initialises the server parts, so the classifier is learnt from the latents
            alone; ``"head"`` keeps the exported server but gives it a new class layer (new classes);
            ``"none"`` fine-tunes the exported server. See :func:`taskcodec.adapt.server_codec`.
        label_smoothing: of the training cross-entropy.
        num_classes: classes of the new server (default: the export's).
        server: the family's server variant, e.g. ``"linear"`` (a linear probe on the split family's
            latent); default: the export's.
    """

    def __init__(
        self,
        decoder: str,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        reset: str = "all",
        label_smoothing: float = 0.0,
        num_classes: int | None = None,
        server: str | None = None,
    ) -> None:
        super().__init__()
        if lr <= 0 or weight_decay < 0:
            raise ConfigError(f"model.lr must be > 0 and model.weight_decay >= 0, got {lr} and {weight_decay}")
        self.save_hyperparameters()
        codec, meta = server_codec(decoder, num_classes, server, reset)
        self.client_meta = meta
        self.hparams.update(codec_id=meta["codec_id"], codec_family=codec.family, codec_config=dict(codec.config))
        self.codec = codec.train()
        self.codec.entropy.eval()
        self.image_size: tuple[int, int] | None = None  # from the datamodule at fit time, else the padded size
        self.init_metrics(int(codec.config["num_classes"]))

    def forward(self, y_hat: Tensor) -> Tensor:
        """Logits of a batch of decoded latents [B, C, h, w]."""
        size = self.image_size
        if size is None:  # the padded image size: all a latent tells, and all the split family needs
            s = self.codec.analysis_stride
            size = (y_hat.shape[-2] * s, y_hat.shape[-1] * s)
        return self.codec.synthesis(y_hat, size)["logits"]

    def _datamodule_image_size(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        size = getattr(dm, "image_size", None)
        self.image_size = tuple(size) if size else None

    def on_fit_start(self) -> None:
        self._datamodule_image_size()

    def on_test_start(self) -> None:
        self._datamodule_image_size()

    def on_train_epoch_start(self) -> None:
        self.codec.entropy.eval()  # frozen: exactly the exported tables and statistics

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for name in server_parts(self.codec) for p in getattr(self.codec, name).parameters()]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]  # biases, norms, GDN's beta
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=hp.lr
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = total / max(1, self.trainer.max_epochs or 1)
        sched = warmup_cosine(opt, total, max(1, int(0.3 * per_epoch)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


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
    progress=None,
    on_error=None,
) -> dict:
    """``taskcodec adapt``: a new server for an exported client on a user's own labelled images.

    ``on_error(name, error)``: unreadable images are reported to it and left out (``skipped`` in the
    summary); without it the first one stops the run.

    The images are compressed once with the unchanged client into ``out_dir/packs/train``
    (resumable), a stratified ``holdout_per_class`` is held out for the reported accuracy, the
    server trains on the latents alone, and ``out_dir`` gets ``decoder-<client id>.pt`` (plus a copy
    of the encoder and ``adapt.json``). With ``init_decoder`` the server starts from that decoder's
    (new class layer); otherwise from scratch.
    """
    import json
    import time
    from pathlib import Path

    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger

    from datamodules.packed import PackedLatentDataModule
    from taskcodec.adapt import export_server
    from taskcodec.export import load_encoder
    from taskcodec.pack import open_source, pack, read_shard, shard_paths

    if epochs < 1 or holdout_per_class < 0:
        raise ConfigError(f"adapt needs epochs >= 1 and holdout_per_class >= 0, got {epochs} and {holdout_per_class}")
    out = Path(out_dir)
    images = open_source(dataset, kind, "train", num_classes, first_class)
    client, client_meta = load_encoder(encoder)
    if init_decoder is not None:
        from taskcodec.export import read_export

        if read_export(init_decoder)["codec_id"] != client_meta["codec_id"]:
            raise ConfigError(f"{init_decoder} is not the decoder of {encoder} (model ids differ)")
    plan_dir = out / "packs" / "train"
    t0 = time.perf_counter()
    plan = pack(client, client_meta, images, plan_dir, str(dataset), "train", 1000,
                32, threads or 2, progress, names=False, on_error=on_error)  # fmt: skip
    packed = plan["count"] - len(plan.get("skipped", []))
    pack_s = time.perf_counter() - t0
    record_bytes = sum(len(e.record) for p in shard_paths(plan_dir) for e in read_shard(p).entries)
    pl.seed_everything(seed, workers=True)
    server_from = init_decoder or encoder  # one path for both, so their saved hparams agree
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
    (out / "adapt.json").write_text(json.dumps(summary, indent=1))
    return summary
