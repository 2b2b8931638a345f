"""The reference classifier: a timm model trained on clean images.

Its test top-1 defines "accuracy comparable to uncompressed" for every rate-accuracy claim, and it
is the teacher every codec distils from, so it is trained to its plateau: timm's mixup/cutmix and
an EMA of the weights (timm's ``ModelEmaV3``) are options here, the augmentation policy lives in
the datamodule. With ``ema_decay > 0`` validation, testing and every exported use of the
checkpoint (:func:`taskcodec.models.classifier.reference_weights`) read the EMA weights.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.utils import ModelEmaV3
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from taskcodec.errors import ConfigError
from taskcodec.models import ImageClassifier


def accuracy_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Top-1 and top-5 (capped at the number of classes) logged as ``<stage>/acc`` and ``<stage>/top5``."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro"),
            "top5": MulticlassAccuracy(num_classes=num_classes, top_k=min(5, num_classes), average="micro"),
        },
        prefix=prefix,
    )


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int):
    """Linear warm-up then cosine decay to zero, stepped every batch."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class ClassificationSteps(pl.LightningModule):
    """Cross-entropy train/val/test steps with one torchmetrics collection per stage.

    Subclasses set ``hparams.label_smoothing`` and call :meth:`init_metrics`; ``forward`` maps a
    batch's inputs (images, or latents for the server side) to logits.
    """

    def init_metrics(self, num_classes: int) -> None:
        self.train_metrics = accuracy_metrics(num_classes, "train/")
        self.val_metrics = accuracy_metrics(num_classes, "val/")
        self.test_metrics = accuracy_metrics(num_classes, "test/")

    def _step(self, batch, stage: str, metrics: MetricCollection) -> Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        smoothing = self.hparams.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        metrics.update(logits, y)
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", batch_size=len(y))
        # update() leaves no per-step value, so accuracy is logged per epoch in every stage
        self.log_dict(metrics, prog_bar=stage != "train", on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def training_step(self, batch, batch_idx: int) -> Tensor:
        return self._step(batch, "train", self.train_metrics)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val", self.val_metrics)

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test", self.test_metrics)



class ClassifierModule(ClassificationSteps):
    """Trains any timm classifier on RGB in [0, 1] with SGD + warm-up/cosine and label smoothing."""

    def __init__(
        self,
        classifier: str = "resnet18",
        num_classes: int = 10,
        pretrained: bool = False,
        weights: str | None = None,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        label_smoothing: float = 0.1,
        warmup_epochs: float = 1.0,
        drop_rate: float = 0.0,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        mix_prob: float = 1.0,
        ema_decay: float = 0.0,
    ) -> None:
        super().__init__()
        if mixup < 0 or cutmix < 0 or not 0 <= mix_prob <= 1:
            raise ConfigError(f"mixup and cutmix must be >= 0 and mix_prob in [0, 1]; got {mixup}, {cutmix}, {mix_prob}")
        if not 0 <= ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1) (0 = no EMA), got {ema_decay}")
        self.save_hyperparameters()
        self.classifier = ImageClassifier(classifier, num_classes, pretrained, weights, drop_rate)
        # timm's Mixup also applies the label smoothing to the mixed targets
        self.mixer = (
            Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=mix_prob, label_smoothing=label_smoothing,
                  num_classes=num_classes)
            if mixup > 0 or cutmix > 0 else None
        )  # fmt: skip
        # the EMA is a submodule, so it is checkpointed (and resumed) with the rest
        self.ema = ModelEmaV3(self.classifier, decay=ema_decay, use_warmup=True) if ema_decay > 0 else None
        self.init_metrics(num_classes)

    def on_fit_start(self) -> None:
        if getattr(self.trainer.datamodule, "extra_classes", 0):
            raise ConfigError("data.extra_classes adds unlabelled images, which a classifier trained on labels cannot "
                              "use; set data.extra_classes=0 (it is for the codec's feature and distillation terms)")  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        """Training uses the live weights; evaluation the EMA's when there is one."""
        if self.ema is not None and not self.training:
            return self.ema.module(x)
        return self.classifier(x)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        if self.mixer is None or len(y) % 2:  # timm mixes pairs within the batch: needs an even size
            return super().training_step(batch, batch_idx)
        x_mix, soft = self.mixer(x, y)
        logits = self(x_mix)
        loss = torch.sum(-soft * F.log_softmax(logits, dim=-1), dim=-1).mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.classifier, step=self.global_step)

    def configure_optimizers(self):
        hp = self.hparams
        params = list(self.classifier.parameters())  # not the EMA's copy: it follows, it is not trained
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        opt = torch.optim.SGD(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.lr,
            momentum=hp.momentum,
            nesterov=True,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = total / max(1, self.trainer.max_epochs or 1)
        sched = warmup_cosine(opt, total, max(1, int(hp.warmup_epochs * per_epoch)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
