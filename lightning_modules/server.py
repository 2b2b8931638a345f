"""The server side of an exported codec, trained on decoded latents ``(y_hat, label)`` alone.

A deployed server only ever sees the bytes; ``taskcodec pack`` turns a labelled dataset into those
bytes once, and :class:`datamodules.packed.PackedLatentDataModule` serves the latents its entropy
stage rebuilds from them. This system trains the decoder's other parts (``codec.synthesis``: for
the split family ``g_s`` and the classifier's tail) on them with cross-entropy, plus distillation
from a teacher classifier's logits on the same images when the batches carry them. The entropy stage
stays exactly as exported (frozen, in eval mode), so the retrained server still decodes every
record the unchanged client writes.

The ``taskcodec adapt`` workflow that uses it is :mod:`lightning_modules.adapt`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_modules.classifier import ClassificationSteps, warmup_cosine
from taskcodec.adapt import server_codec, server_parts
from taskcodec.errors import ConfigError
from taskcodec.losses import check_distill, distillation_task


class ServerModule(ClassificationSteps):
    """Trains ``codec.synthesis(y_hat, image_size)`` -> logits of an exported decoder with AdamW.

    Args:
        decoder: ``decoder-<id>.pt`` from ``taskcodec export`` (the model the packs were made with),
            or its ``encoder-<id>.pt`` when the server starts fresh (``reset="all"``); a path, or the
            export already read (:func:`taskcodec.export.read_export`).
        lr: peak learning rate (linear warm-up over 0.3 epoch, then cosine decay).
        weight_decay: AdamW weight decay.
        reset: ``"all"`` re-initialises the server parts, so the classifier is learnt from the latents
            alone; ``"head"`` keeps the exported server but gives it a new class layer (new classes);
            ``"none"`` fine-tunes the exported server. See :func:`taskcodec.adapt.server_codec`.
        label_smoothing: of the training cross-entropy.
        num_classes: classes of the new server (default: the export's).
        server: the family's server variant, e.g. ``"linear"`` (a linear probe on the split family's
            latent); default: the export's.
        distill: the KL share of the training loss, ``(1 - distill)·CE + distill·T²·KL``, on batches
            ``(y_hat, label, teacher_logits)`` (:func:`taskcodec.losses.distillation_task`); 0: CE.
        temperature: the distillation temperature ``T``.
    """

    def __init__(
        self,
        decoder: str | dict,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        reset: str = "all",
        label_smoothing: float = 0.0,
        num_classes: int | None = None,
        server: str | None = None,
        distill: float = 0.0,
        temperature: float = 4.0,
    ) -> None:
        super().__init__()
        if lr <= 0 or weight_decay < 0:
            raise ConfigError(f"model.lr must be > 0 and model.weight_decay >= 0, got {lr} and {weight_decay}")
        check_distill(distill, temperature)
        self.save_hyperparameters(ignore=[] if isinstance(decoder, str) else ["decoder"])
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

    def training_step(self, batch, batch_idx: int) -> Tensor:
        if not self.hparams.distill:
            return super().training_step(batch, batch_idx)
        if len(batch) < 3:
            raise ConfigError("distill > 0 needs the teacher's logits in every training batch (taskcodec adapt --teacher)")
        y_hat, labels, teacher_logits = batch[:3]
        logits = self(y_hat)
        terms = distillation_task(logits, labels, teacher_logits, self.hparams.distill, self.hparams.temperature,
                                  self.hparams.label_smoothing)  # fmt: skip
        self.train_metrics.update(logits, labels)
        self.log_dict({"train/loss": terms["task"], "train/ce": terms["ce"], "train/kd": terms["kd"]},
                      on_step=False, on_epoch=True, batch_size=len(labels))  # fmt: skip
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, batch_size=len(labels))
        return terms["task"]

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
