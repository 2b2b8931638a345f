"""Joint training of the codec and its classifier on rate + λ·cross-entropy (no distortion term).

Rate is in bits per pixel of the input, CompressAI's convention: a larger ``lmbda`` buys accuracy
with bits. With ``distill > 0`` the task term becomes ``(1 - distill)·CE + distill·T²·KL``, where
the KL is between the softened logits of the frozen reference classifier (on the uncompressed
image) and the codec's (Hinton et al. 2015); it is still classification-only, no distortion term. Lightning's ``val`` stage is the hold-out split (model selection, estimated rate); the
``test`` stage is the reported split and codes every image for real (compress -> bytes ->
decompress -> classify) on a CPU copy of the model.
"""

from __future__ import annotations

import copy

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_modules.classifier import accuracy_metrics, warmup_cosine
from taskcodec.errors import ConfigError
from taskcodec.models import (
    CodecConfig,
    TaskCodec,
    load_image_classifier,
    load_reference_classifier,
    resize_buffers_like,
)


class JointCodecModule(pl.LightningModule):
    """CompressAI scale hyperprior + timm classifier trained end to end on R + λ·CE."""

    def __init__(
        self,
        head: str = "latent",
        N: int = 64,
        M: int = 96,
        num_stages: int = 2,
        classifier: str = "resnet18",
        num_classes: int = 10,
        lmbda: float = 1.0,
        lr: float = 1e-3,
        classifier_lr: float | None = None,
        aux_lr: float = 1e-3,
        weight_decay: float = 1e-4,
        rate_warmup_epochs: float = 1.0,
        reference_ckpt: str | None = None,
        freeze_classifier: bool = False,
        label_smoothing: float = 0.0,
        grad_clip: float = 1.0,
        distill: float = 0.0,
        distill_temperature: float = 4.0,
    ) -> None:
        super().__init__()
        if lmbda <= 0:
            raise ConfigError(f"model.lmbda must be > 0 (the weight on cross-entropy), got {lmbda}")
        if freeze_classifier and not reference_ckpt:
            raise ConfigError("model.freeze_classifier=true needs model.reference_ckpt (a trained classifier)")
        if not 0.0 <= distill <= 1.0:
            raise ConfigError(f"model.distill must be in [0, 1] (the KL share of the task term), got {distill}")
        if distill > 0 and not reference_ckpt:
            raise ConfigError("model.distill > 0 needs model.reference_ckpt (the teacher classifier)")
        if distill_temperature <= 0:
            raise ConfigError(f"model.distill_temperature must be > 0, got {distill_temperature}")
        self.save_hyperparameters()
        self.automatic_optimization = False  # two optimisers: main, and CompressAI's aux (quantiles)
        self.model = TaskCodec(CodecConfig(N, M, num_stages, head, classifier, num_classes))
        if reference_ckpt:
            load_reference_classifier(self.model, reference_ckpt)
        if freeze_classifier:
            self.model.classifier.requires_grad_(False)
        self.train_metrics = accuracy_metrics(num_classes, "train/")
        self.val_metrics = accuracy_metrics(num_classes, "val/")
        self.test_metrics = accuracy_metrics(num_classes, "test/")
        self._coder: TaskCodec | None = None
        # The teacher is kept out of the module tree: it is not trained, checkpointed or exported.
        teacher = load_image_classifier(reference_ckpt).requires_grad_(False) if distill > 0 else None
        self.__dict__["_teacher"] = teacher

    def forward(self, x: Tensor) -> dict:
        return self.model(x)

    def _rate_weight(self, batch_idx: int) -> float:
        """Ramp the rate term from 0 to 1 so the codec does not collapse to sending nothing."""
        warm = self.hparams.rate_warmup_epochs
        if warm <= 0:
            return 1.0
        epoch = self.current_epoch + batch_idx / max(1, self.trainer.num_training_batches)
        return min(1.0, epoch / warm)

    def _losses(self, out: dict, x: Tensor, y: Tensor, rate_weight: float, smoothing: float, teach: bool = False) -> dict:
        bpp = out["rate_bits"].mean() / (x.shape[-2] * x.shape[-1])
        ce = F.cross_entropy(out["logits"], y, label_smoothing=smoothing)
        losses = {"bpp": bpp, "ce": ce}
        task = ce
        if teach and self._teacher is not None:
            a, t = self.hparams.distill, self.hparams.distill_temperature
            with torch.no_grad():
                soft = F.log_softmax(self._teacher(x) / t, dim=1)
            kd = F.kl_div(F.log_softmax(out["logits"] / t, dim=1), soft, log_target=True, reduction="batchmean")
            losses["kd"] = kd
            task = (1 - a) * ce + a * t * t * kd
        losses["loss"] = rate_weight * bpp + self.hparams.lmbda * task
        return losses

    def on_fit_start(self) -> None:
        if self._teacher is not None:
            self._teacher.to(self.device).eval()

    def on_train_epoch_start(self) -> None:
        if self.hparams.freeze_classifier:  # keep the server model exactly as it is, BN statistics too
            self.model.classifier.eval()

    def training_step(self, batch, batch_idx: int) -> None:
        opt, aux_opt = self.optimizers()
        x, y = batch[0], batch[1]
        out = self(x)
        w = self._rate_weight(batch_idx)
        losses = self._losses(out, x, y, w, self.hparams.label_smoothing, teach=True)
        aux_loss = self.model.aux_loss()
        opt.zero_grad()
        aux_opt.zero_grad()
        # One backward for both: the aux loss only touches the quantiles, which only aux_opt steps.
        self.manual_backward(losses["loss"] + aux_loss)
        self.clip_gradients(opt, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        aux_opt.step()
        self.lr_schedulers().step()
        self.train_metrics.update(out["logits"], y)
        n = len(y)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=n)
        self.log_dict({"train/aux_loss": aux_loss, "train/rate_weight": w}, batch_size=n)
        # Metrics filled with update() have no per-step value; Lightning computes them per epoch.
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, batch_size=n)

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        out = self(x)
        losses = self._losses(out, x, y, 1.0, 0.0)
        self.val_metrics.update(out["logits"], y)
        n = len(y)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=n)
        self.log("val/est_bytes_per_image", out["rate_bits"].mean() / 8, batch_size=n)
        self.log_dict(self.val_metrics, prog_bar=True, batch_size=n)

    # -- real coding on the reported split --------------------------------------------------
    def on_test_start(self) -> None:
        self._coder = copy.deepcopy(self.model).cpu().eval()
        self._coder.update(force=True)

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = batch[0].cpu(), batch[1].cpu()
        with torch.no_grad():
            streams = self._coder.encode(x)
            decoded = self._coder.decode(streams)
            est_bits = self._coder.code_latents(x)["rate_bits"]
        nbytes = torch.tensor([len(s) for s in streams], dtype=torch.float32)
        self.test_metrics.update(decoded["logits"].to(self.device), y.to(self.device))
        n = len(y)
        self.log_dict(
            {
                "test/bytes_per_image": nbytes.mean(),
                "test/est_bytes_per_image": est_bits.mean() / 8,
                "test/bpp": nbytes.mean() * 8 / (x.shape[-2] * x.shape[-1]),
            },
            batch_size=n,
        )
        self.log_dict(self.test_metrics, batch_size=n)

    def on_test_end(self) -> None:
        self._coder = None

    # -- optimisation and checkpoints --------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        main, aux = self.model.main_and_aux_parameters()
        cls_ids = {id(p) for p in self.model.classifier.parameters()}
        codec_params = [p for p in main if id(p) not in cls_ids]
        cls_params = [p for p in main if id(p) in cls_ids]
        groups = [{"params": codec_params, "lr": hp.lr}]
        if cls_params:
            groups.append({"params": cls_params, "lr": hp.classifier_lr or hp.lr})
        opt = torch.optim.AdamW(groups, weight_decay=hp.weight_decay)
        aux_opt = torch.optim.Adam(aux, lr=hp.aux_lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = total / max(1, self.trainer.max_epochs or 1)
        sched = warmup_cosine(opt, total, max(1, int(0.3 * per_epoch)))
        return [opt, aux_opt], [sched]

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        """Resize CompressAI's CDF buffers first: their size depends on whether update() ran."""
        resize_buffers_like(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, **kwargs)
