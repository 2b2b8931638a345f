"""Rate + λ·task: the only objective taskcodec trains on (no distortion or perceptual term).

Modelled on CompressAI's ``RateDistortionLoss``: rate is in bits per input pixel (bpp), and a
larger ``lmbda`` buys accuracy with bits. The task term is cross-entropy, or with ``distill > 0``
``(1 - distill)·CE + distill·T²·KL(teacher || student)`` on logits softened by ``T`` (Hinton et al.
2015), where the teacher is the reference classifier on the uncompressed image.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from taskcodec.errors import ConfigError

#: the label of a training image without one (``data.extra_classes``): the cross-entropy skips it,
#: distillation and feature matching learn from it
UNLABELED = -1


def labelled_cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy over the labelled images of a batch; zero (with a gradient path) when it has none."""
    if not (labels != UNLABELED).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=UNLABELED, label_smoothing=label_smoothing)


def distillation_task(
    logits: Tensor,
    labels: Tensor,
    teacher_logits: Tensor | None = None,
    distill: float = 0.0,
    temperature: float = 4.0,
    label_smoothing: float = 0.0,
) -> dict[str, Tensor]:
    """The task term: CE, or ``(1 - distill)·CE + distill·T²·KL(teacher || student)`` with a teacher.

    Returns ``{"ce", "task"}`` and, when it distils, ``"kd"`` (the KL before the ``T²`` scaling).
    """
    ce = labelled_cross_entropy(logits, labels, label_smoothing)
    terms = {"ce": ce, "task": ce}
    if teacher_logits is not None and distill > 0:
        t = temperature
        kd = F.kl_div(
            F.log_softmax(logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1), log_target=True, reduction="batchmean"
        )
        terms |= {"kd": kd, "task": (1 - distill) * ce + distill * t * t * kd}
    return terms


def check_distill(distill: float, temperature: float) -> None:
    if not 0.0 <= distill <= 1.0:
        raise ConfigError(f"distill must be in [0, 1] (the KL share of the task term), got {distill}")
    if temperature <= 0:
        raise ConfigError(f"distill_temperature must be > 0, got {temperature}")


class RateTaskLoss(nn.Module):
    """``rate_weight·bpp + lmbda·task``; returns every term so each can be logged."""

    def __init__(self, lmbda: float = 1.0, distill: float = 0.0, temperature: float = 4.0) -> None:
        super().__init__()
        if lmbda <= 0:
            raise ConfigError(f"lmbda must be > 0 (the weight on the task loss), got {lmbda}")
        check_distill(distill, temperature)
        self.lmbda, self.distill, self.temperature = lmbda, distill, temperature

    def forward(
        self,
        out: dict,
        labels: Tensor,
        num_pixels: int,
        teacher_logits: Tensor | None = None,
        rate_weight: float = 1.0,
        label_smoothing: float = 0.0,
    ) -> dict[str, Tensor]:
        bpp = out["rate_bits"].mean() / num_pixels
        terms = distillation_task(out["logits"], labels, teacher_logits, self.distill, self.temperature, label_smoothing)
        task = terms.pop("task")
        return {"bpp": bpp, **terms, "loss": rate_weight * bpp + self.lmbda * task}


class RateFeatureLoss(nn.Module):
    """``rate_weight·bpp + lmbda·Σ_d relMSE_d``: match the teacher's features at every depth (stage 1).

    Each depth's squared error is divided by the teacher feature's mean square, so every stage counts
    alike whatever its scale (early feature maps are large, late ones small). The logits' CE is
    reported, not trained on.
    """

    def __init__(self, lmbda: float = 1.0) -> None:
        super().__init__()
        if lmbda <= 0:
            raise ConfigError(f"lmbda must be > 0 (the weight on the feature term), got {lmbda}")
        self.lmbda = lmbda

    def forward(self, out: dict, labels: Tensor, num_pixels: int, teacher: dict, rate_weight: float = 1.0) -> dict[str, Tensor]:
        if len(out["features"]) != len(teacher["features"]):
            raise ConfigError(f"student has {len(out['features'])} feature depths, teacher {len(teacher['features'])}")
        bpp = out["rate_bits"].mean() / num_pixels
        terms = [F.mse_loss(s, t) / t.pow(2).mean().clamp_min(1e-8) for s, t in zip(out["features"], teacher["features"], strict=True)]
        feat = sum(terms)
        losses = {"bpp": bpp, "feat": feat, "ce": labelled_cross_entropy(out["logits"].detach(), labels)}
        losses.update({f"feat{d}": t.detach() for d, t in enumerate(terms)})
        losses["loss"] = rate_weight * bpp + self.lmbda * feat
        return losses
