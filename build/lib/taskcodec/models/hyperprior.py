"""The ``hyperprior`` family: a CompressAI-style analysis transform on pixels, a scale hyperprior,
and one of two heads on the decoded latent ``y_hat``.

* ``pixel``: ``g_s`` synthesises an image and a timm classifier (possibly the frozen reference)
  classifies it, so an existing server model is kept unchanged.
* ``latent``: a timm classifier with ``in_chans=M`` classifies ``y_hat`` directly; its stem is
  adapted to the latent's resolution, and the server never decodes pixels.
"""

from __future__ import annotations

from compressai.layers import GDN
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from taskcodec.errors import CheckpointError, ConfigError
from taskcodec.models.base import TaskCodecBase
from taskcodec.models.classifier import ImageClassifier, check_reference_fits, create_timm
from taskcodec.models.entropy import HyperpriorEntropy
from taskcodec.models.registry import register_codec

HEADS = ("pixel", "latent")


def _analysis(cin: int, N: int, M: int, stages: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(stages):
        last = i == stages - 1
        layers.append(conv(cin if i == 0 else N, M if last else N))
        if not last:
            layers.append(GDN(N))
    return nn.Sequential(*layers)


def _synthesis(M: int, N: int, cout: int, stages: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(stages):
        last = i == stages - 1
        layers.append(deconv(M if i == 0 else N, cout if last else N))
        if not last:
            layers.append(GDN(N, inverse=True))
    return nn.Sequential(*layers)


def build_latent_classifier(name: str, num_classes: int, in_chans: int, latent_stride: int) -> nn.Module:
    """A timm classifier on ``y_hat`` whose stem only downsamples what the codec has not already.

    ResNet-style stems (``conv1`` + ``maxpool``) downsample by 4; on a latent that is already
    ``latent_stride`` times smaller, keeping them would leave 1x1 maps after two stages.
    """
    model = create_timm(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    if not (hasattr(model, "conv1") and hasattr(model, "maxpool") and isinstance(model.conv1, nn.Conv2d)):
        raise ConfigError(
            f"latent head: stem adaptation supports ResNet-style timm models (conv1 + maxpool), "
            f"not {name!r}; use e.g. resnet18/resnet34/resnet50, head=pixel or the split family"
        )
    if latent_stride >= 2:
        model.conv1 = nn.Conv2d(in_chans, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        if latent_stride >= 4:
            model.maxpool = nn.Identity()
    return model


@register_codec("hyperprior")
class HyperpriorCodec(TaskCodecBase):
    """Scale-hyperprior codec on pixels plus a classifier head (``pixel`` or ``latent``)."""

    encoder_parts = ("g_a", "entropy")

    def __init__(
        self,
        N: int = 64,
        M: int = 96,
        num_stages: int = 2,
        head: str = "latent",
        classifier: str = "resnet18",
        num_classes: int = 10,
    ) -> None:
        if head not in HEADS:
            raise ConfigError(f"codec head must be one of {HEADS}, got {head!r}")
        for key, v in (("N", N), ("M", M), ("num_stages", num_stages), ("num_classes", num_classes)):
            if int(v) < 1:
                raise ConfigError(f"codec {key} must be >= 1, got {v!r}")
        super().__init__(dict(N=N, M=M, num_stages=num_stages, head=head, classifier=classifier, num_classes=num_classes))
        self.head = head
        self.has_pixels = head == "pixel"
        self.decoder_parts = ("entropy", "g_s", "classifier") if self.has_pixels else ("entropy", "classifier")
        self.analysis_stride, self.latent_channels = 2**num_stages, M
        self.g_a = _analysis(3, N, M, num_stages)
        self.entropy = HyperpriorEntropy(M, N, z_channels=N, z_stages=2)
        if self.has_pixels:
            self.g_s = _synthesis(M, N, 3, num_stages)
            self.classifier = ImageClassifier(classifier, num_classes)
        else:
            self.classifier = build_latent_classifier(classifier, num_classes, M, 2**num_stages)

    def analysis(self, x: Tensor) -> Tensor:
        return self.g_a(x)

    def synthesis(self, y_hat: Tensor, image_size: tuple[int, int]) -> dict[str, Tensor]:
        if self.has_pixels:
            h, w = image_size
            x_hat = self.g_s(y_hat)[..., :h, :w].clamp(0, 1)
            return {"x_hat": x_hat, "logits": self.classifier(x_hat)}
        return {"logits": self.classifier(y_hat)}

    def _classifier_body(self) -> nn.Module:
        return self.classifier.model if self.has_pixels else self.classifier

    def classifier_head_prefixes(self) -> list[str]:
        body = self._classifier_body()
        head = body.get_classifier()
        name = next(n for n, m in body.named_modules() if m is head)
        return [f"classifier.{'model.' if self.has_pixels else ''}{name}."]

    def reference_modules(self, side: str = "both") -> list[nn.Module]:
        return [] if side == "encoder" else [self.classifier]

    def init_from_reference(self, path: str) -> list[str]:
        """The pixel head takes every weight; the latent head all but its adapted stem."""
        weights = check_reference_fits(path, self.config["classifier"], self.config["num_classes"])
        target = self._classifier_body()
        own = target.state_dict()
        skipped = [k for k, v in weights.items() if k not in own or own[k].shape != v.shape]
        if self.has_pixels and skipped:
            raise CheckpointError(f"{path} does not fit the pixel head's classifier (mismatched: {skipped[:4]})")
        target.load_state_dict({k: v for k, v in weights.items() if k not in skipped}, strict=False)
        return skipped
