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
from taskcodec.export import PAYLOAD_KEY, codec_payload, load_codec_state
from taskcodec.losses import UNLABELED, RateFeatureLoss, RateTaskLoss
from taskcodec.models import TaskCodecBase, load_image_classifier
from taskcodec.models.light import FeatureTeacher
from taskcodec.preprocessing import preprocessing_config

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
        objective: str = "task",
        freeze_client: bool = False,
        init_codec: str | None = None,
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
        if objective not in ("task", "features"):
            raise ConfigError(f"model.objective must be 'task' or 'features', got {objective!r}")
        if objective == "features" and not (reference_ckpt and hasattr(codec, "feature_stages")):
            raise ConfigError(
                "model.objective=features matches the teacher's features: it needs model.reference_ckpt and a "
                "codec family that exposes them (model/codec=light)"
            )
        self.save_hyperparameters(ignore=["codec"])
        self.hparams.update(codec_family=codec.family, codec_config=dict(codec.config))
        self.automatic_optimization = False  # two optimisers: main, and CompressAI's aux (quantiles)
        self.loss = RateTaskLoss(lmbda, distill, distill_temperature)
        self.feature_loss = RateFeatureLoss(lmbda) if objective == "features" else None
        self.codec = codec
        if reference_ckpt:
            codec.init_from_reference(reference_ckpt)
        self._init_meta: dict = {}
        if init_codec:  # e.g. stage 2 starts from stage 1's codec
            self._init_meta = load_codec_state(codec, init_codec)
        for p in codec.reference_parameters(FREEZE[freeze]) if freeze != "none" else []:
            p.requires_grad_(False)
        for m in self._frozen_client():
            m.requires_grad_(False)
        n = int(codec.config["num_classes"])
        self.train_metrics = accuracy_metrics(n, "train/")
        self.val_metrics = accuracy_metrics(n, "val/")
        self.test_metrics = accuracy_metrics(n, "test/")
        self._coder: TaskCodecBase | None = None
        self.test_correct: list[bool] = []
        self.data_meta: dict[str, list[str]] = {}  # class ids and names and the input preprocessing, stored in exports
        # The teacher is kept out of the module tree: it is not trained, checkpointed or exported.
        teacher = load_image_classifier(reference_ckpt).requires_grad_(False) if distill > 0 or objective == "features" else None
        if objective == "features":
            teacher = FeatureTeacher(teacher, codec)
        self.__dict__["_teacher"] = teacher

    def _frozen_client(self) -> list:
        """The modules ``freeze_client`` fixes: the encoder's parts (what the client runs and codes with)."""
        if not self.hparams.freeze_client:
            return []
        return [self.codec.get_submodule(name) for name in self.codec.encoder_parts]

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
        self.data_meta = {k: list(getattr(dm, k)) for k in ("class_names", "class_words") if getattr(dm, k, None)}
        if getattr(dm, "extra_classes", 0):  # trained with other classes' images too: tables label it apart
            self.data_meta["extra_classes"] = int(dm.extra_classes)
        if getattr(dm, "augment_policy", None):  # trained on TrivialAugment/RandAugment views: labelled apart too
            self.data_meta["augment_policy"] = str(dm.augment_policy)
        train_set = getattr(dm, "train_set", None)
        if getattr(dm, "preprocessing", None):  # the datamodule says what its test images went through
            self.data_meta["preprocessing"] = dict(dm.preprocessing)
        elif train_set is not None and getattr(train_set, "images", None) is not None:  # what the model is trained on
            self.data_meta["preprocessing"] = preprocessing_config(*train_set.images.shape[1:3])

    def on_train_epoch_start(self) -> None:
        if self.hparams.freeze != "none":  # keep the frozen reference parts exactly as they are, BN statistics too
            for m in self.codec.reference_modules(FREEZE[self.hparams.freeze]):
                m.eval()
        for m in self._frozen_client():  # real rounding: the server trains on exactly what decoding rebuilds
            m.eval()

    def training_step(self, batch, batch_idx: int) -> None:
        opts = self.optimizers()
        opt, aux_opt = opts if isinstance(opts, list) else (opts, None)  # a frozen client has no aux loss
        x, y = batch[0], batch[1]
        out = self(x)
        w = self._rate_weight(batch_idx)
        losses = self._losses(out, x, y, w)
        aux_loss = self.codec.aux_loss() if aux_opt is not None else torch.zeros((), device=x.device)
        opt.zero_grad()
        if aux_opt is not None:
            aux_opt.zero_grad()
        # One backward for both: the aux loss only touches the quantiles, which only aux_opt steps.
        self.manual_backward(losses["loss"] + aux_loss)
        self.clip_gradients(opt, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        if aux_opt is not None:
            aux_opt.step()
        self.lr_schedulers().step()
        labelled = y != UNLABELED  # images of data.extra_classes have no label to score
        if labelled.any():
            self.train_metrics.update(out["logits"][labelled], y[labelled])
        n = len(y)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=n)
        self.log_dict({"train/aux_loss": aux_loss, "train/rate_weight": w}, batch_size=n)
        # Metrics filled with update() have no per-step value; Lightning computes them per epoch.
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, batch_size=n)

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        out = self(x)
        losses = self._losses(out, x, y, 1.0, validation=True)
        self.val_metrics.update(out["logits"], y)
        n = len(y)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=n)
        self.log("val/est_bytes_per_image", out["rate_bits"].mean() / 8, batch_size=n)
        self.log_dict(self.val_metrics, prog_bar=True, batch_size=n)

    def _losses(self, out: dict, x: Tensor, y: Tensor, rate_weight: float, validation: bool = False) -> dict:
        npix = x.shape[-2] * x.shape[-1]
        if self.feature_loss is not None:
            return self.feature_loss(out, y, npix, self._teacher(x), rate_weight)
        if validation:
            return self.loss(out, y, npix)
        teacher = None
        if self._teacher is not None:
            with torch.no_grad():
                teacher = self._teacher(x)
        return self.loss(out, y, npix, teacher, rate_weight, self.hparams.label_smoothing)

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
        opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=hp.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = total / max(1, self.trainer.max_epochs or 1)
        sched = warmup_cosine(opt, total, max(1, int(0.3 * per_epoch)))
        if not aux:
            return [opt], [sched]
        return [opt, torch.optim.Adam(aux, lr=hp.aux_lr)], [sched]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        hp = self.hparams
        recipe = "features" if hp.objective == "features" else ("two-stage" if hp.freeze_client and hp.init_codec else "one-stage")
        meta = {"lmbda": hp.lmbda, "distill": hp.distill, "objective": hp.objective, "recipe": recipe}
        if hp.init_codec:  # stage 2 keeps stage 1's rate setting: that is what made its bytes
            meta["lmbda"] = self._init_meta.get("lmbda", hp.lmbda)
        meta.update(self.data_meta)
        checkpoint[PAYLOAD_KEY] = codec_payload(self.codec, meta)
