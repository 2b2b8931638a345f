"""Joint training of a codec family and its classifier on rate + λ·task (no distortion term).

The codec is any registered family (``taskcodec.models``), passed in as a built module (the config
gives it as a nested ``_target_``). The loss is :class:`taskcodec.losses.RateTaskLoss`. Lightning's
``val`` stage is the hold-out split (model selection, estimated rate); the ``test`` stage is the
reported split and codes every image for real (compress -> bytes -> decode -> classify) on a CPU
copy of the codec, through the same :func:`taskcodec.evaluation.code_and_classify` as
``evaluate.py``. Checkpoints carry the codec as a plain ``{family, config, state_dict, meta}``
payload, which is all ``taskcodec export`` reads.
"""

from __future__ import annotations

import copy

import pytorch_lightning as pl
import torch
from compressai.entropy_models import EntropyBottleneck
from torch import Tensor

from lightning_modules.classifier import accuracy_metrics, warmup_cosine
from taskcodec.errors import ConfigError
from taskcodec.evaluation import code_and_classify
from taskcodec.export import PAYLOAD_KEY, codec_payload
from taskcodec.losses import RateTaskLoss
from taskcodec.models import TaskCodecBase, load_image_classifier

#: model.freeze -> which reference parts stay fixed: the client's (a split codec's front stages,
#: so the client is the reference's own first stages and backward stops at the bottleneck), or all
FREEZE = {"none": None, "client": "encoder", "all": "both"}


class JointCodecModule(pl.LightningModule):
    """A codec family trained end to end on R + λ·task, with CompressAI's aux optimiser."""

    def __init__(
        self,
        codec: TaskCodecBase,
        lmbda: float = 1.0,
        lr: float = 1e-3,
        classifier_lr: float | None = None,
        aux_lr: float = 1e-3,
        entropy_lr: float | None = None,
        weight_decay: float = 1e-4,
        rate_warmup_epochs: float = 1.0,
        reference_ckpt: str | None = None,
        freeze: str = "none",
        label_smoothing: float = 0.0,
        grad_clip: float = 1.0,
        distill: float = 0.0,
        distill_temperature: float = 4.0,
    ) -> None:
        super().__init__()
        if not isinstance(codec, TaskCodecBase):
            raise ConfigError(f"model.codec must build a taskcodec codec family, got {type(codec).__name__}")
        if freeze not in FREEZE:
            raise ConfigError(f"model.freeze must be one of {sorted(FREEZE)}, got {freeze!r}")
        if freeze != "none" and not reference_ckpt:
            raise ConfigError(f"model.freeze={freeze} needs model.reference_ckpt (a trained classifier)")
        if distill > 0 and not reference_ckpt:
            raise ConfigError("model.distill > 0 needs model.reference_ckpt (the teacher classifier)")
        self.save_hyperparameters(ignore=["codec"])
        self.hparams.update(codec_family=codec.family, codec_config=dict(codec.config))
        self.automatic_optimization = False  # two optimisers: main, and CompressAI's aux (quantiles)
        self.loss = RateTaskLoss(lmbda, distill, distill_temperature)
        self.codec = codec
        if reference_ckpt:
            codec.init_from_reference(reference_ckpt)
        for p in codec.reference_parameters(FREEZE[freeze]) if freeze != "none" else []:
            p.requires_grad_(False)
        n = int(codec.config["num_classes"])
        self.train_metrics = accuracy_metrics(n, "train/")
        self.val_metrics = accuracy_metrics(n, "val/")
        self.test_metrics = accuracy_metrics(n, "test/")
        self._coder: TaskCodecBase | None = None
        self.test_correct: list[bool] = []
        self.class_meta: dict[str, list[str]] = {}  # class ids and names, stored in exports for the CLI
        # The teacher is kept out of the module tree: it is not trained, checkpointed or exported.
        self.__dict__["_teacher"] = load_image_classifier(reference_ckpt).requires_grad_(False) if distill > 0 else None

    def forward(self, x: Tensor) -> dict:
        return self.codec(x)

    def _rate_weight(self, batch_idx: int) -> float:
        """Ramp the rate term from 0 to 1 so the codec does not collapse to sending nothing."""
        warm = self.hparams.rate_warmup_epochs
        if warm <= 0:
            return 1.0
        epoch = self.current_epoch + batch_idx / max(1, self.trainer.num_training_batches)
        return min(1.0, epoch / warm)

    def on_fit_start(self) -> None:
        if self._teacher is not None:
            self._teacher.to(self.device).eval()
        dm = self.trainer.datamodule
        self.class_meta = {k: list(getattr(dm, k)) for k in ("class_names", "class_words") if getattr(dm, k, None)}

    def on_train_epoch_start(self) -> None:
        if self.hparams.freeze != "none":  # keep the frozen reference parts exactly as they are, BN statistics too
            for m in self.codec.reference_modules(FREEZE[self.hparams.freeze]):
                m.eval()

    def training_step(self, batch, batch_idx: int) -> None:
        opt, aux_opt = self.optimizers()
        x, y = batch[0], batch[1]
        out = self(x)
        w = self._rate_weight(batch_idx)
        teacher = None
        if self._teacher is not None:
            with torch.no_grad():
                teacher = self._teacher(x)
        losses = self.loss(out, y, x.shape[-2] * x.shape[-1], teacher, w, self.hparams.label_smoothing)
        aux_loss = self.codec.aux_loss()
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
        losses = self.loss(out, y, x.shape[-2] * x.shape[-1])
        self.val_metrics.update(out["logits"], y)
        n = len(y)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=n)
        self.log("val/est_bytes_per_image", out["rate_bits"].mean() / 8, batch_size=n)
        self.log_dict(self.val_metrics, prog_bar=True, batch_size=n)

    # -- real coding on the reported split --------------------------------------------------
    def on_test_start(self) -> None:
        self._coder = copy.deepcopy(self.codec).cpu().eval()
        self._coder.update(force=True)
        self.test_correct = []

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = batch[0].cpu(), batch[1].cpu()
        res = code_and_classify(self._coder, self._coder, x)
        self.test_correct += (res["logits"].argmax(1) == y).tolist()
        self.test_metrics.update(res["logits"].to(self.device), y.to(self.device))
        n = len(y)
        nbytes = torch.tensor(res["record_bytes"], dtype=torch.float32)
        self.log_dict(
            {
                "test/bytes_per_image": nbytes.mean(),
                "test/payload_bytes_per_image": torch.tensor(res["payload_bytes"], dtype=torch.float32).mean(),
                "test/est_bytes_per_image": res["est_bits"].mean() / 8,
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
        main, aux = self.codec.main_and_aux_parameters()
        ref_ids = {id(p) for p in self.codec.reference_parameters()}
        # The learned densities start broad and must become peaked within a few hundred steps on a
        # CPU budget; at the codec's lr they barely move, so they get their own (larger) rate.
        density_ids = {id(p) for m in self.codec.modules() if isinstance(m, EntropyBottleneck) for p in m.parameters()}
        groups = [{"params": [p for p in main if id(p) not in ref_ids | density_ids], "lr": hp.lr}]
        for ids, lr in ((ref_ids, hp.classifier_lr), (density_ids, hp.entropy_lr)):
            params = [p for p in main if id(p) in ids]
            if params:
                groups.append({"params": params, "lr": lr or hp.lr})
        opt = torch.optim.AdamW(groups, weight_decay=hp.weight_decay)
        aux_opt = torch.optim.Adam(aux, lr=hp.aux_lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = total / max(1, self.trainer.max_epochs or 1)
        sched = warmup_cosine(opt, total, max(1, int(0.3 * per_epoch)))
        return [opt, aux_opt], [sched]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        meta = {"lmbda": self.hparams.lmbda, "distill": self.hparams.distill}
        meta.update(self.class_meta)
        checkpoint[PAYLOAD_KEY] = codec_payload(self.codec, meta)
