"""The ``light`` family: a small learned client in place of the classifier's first stages.

Split computing's point is a weak device: the client must cost a small share of the classifier.
Here the client is a few strided convolutions (GDN or ReLU) down to ``M`` channels and an entropy
model; it runs none of the classifier. The server holds the capacity: a decoder maps the latent to
the output of the classifier's stage ``split`` (the teacher's features there), and the reference's
remaining stages and head run unchanged (Entropic Student and SC2, Matsubara et al.; BottleFit;
FrankenSplit).

Training is two-stage (``lightning_modules/joint.py``, ``objective``):

1. ``features``: encoder, entropy model and decoder learn to reproduce the teacher's features at
   every depth from ``split`` on (the tail is frozen), plus the rate;
2. ``task``: the client is frozen (its bytes no longer change) and the decoder and tail are
   fine-tuned with distillation from the teacher plus cross-entropy.

``features(x)`` gives the student's features at those depths, ``FeatureTeacher`` the teacher's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from compressai.layers import GDN
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from taskcodec.errors import CheckpointError, ConfigError
from taskcodec.models.base import TaskCodecBase
from taskcodec.models.classifier import Normalize, check_reference_fits, create_timm
from taskcodec.models.entropy import build_entropy
from taskcodec.models.registry import register_codec
from taskcodec.models.split import LinearProbe, TimmTail, split_stages


def _act(kind: str, channels: int, inverse: bool = False) -> nn.Module:
    if kind == "gdn":
        return GDN(channels, inverse=inverse)
    if kind == "relu":
        return nn.ReLU(inplace=True)
    raise ConfigError(f"light codec act must be 'gdn' or 'relu', got {kind!r}")


class FeatureTail(TimmTail):
    """The reference's stages after the split; ``features`` also returns each stage's output."""

    def features(self, x: Tensor, stages: Sequence[str]) -> tuple[list[Tensor], Tensor]:
        feats = []
        for name in self.names:
            x = self.model.get_submodule(name)(x)
            if name in stages:
                feats.append(x)
        return feats, self.model.forward_head(x)


@register_codec("light")
class LightClientCodec(TaskCodecBase):
    """A few strided convolutions on the client; decoder + the reference's later stages on the server."""

    encoder_parts = ("g_a", "entropy")
    decoder_parts = ("entropy", "g_s", "tail")

    def __init__(
        self,
        classifier: str = "resnet18",
        num_classes: int = 10,
        split: str | int = "layer1",
        channels: Sequence[int] = (16, 32, 64),
        M: int = 32,
        kernel: int = 5,
        act: str = "gdn",
        N: int | None = None,
        entropy: str = "hyperprior",
        z_channels: int = 16,
        z_stages: int = 1,
        server: str = "tail",
    ) -> None:
        if server not in ("tail", "linear"):
            raise ConfigError(f"light codec server must be 'tail' or 'linear', got {server!r}")
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1 or M < 1 or kernel < 1 or num_classes < 1 or (N is not None and N < 1):
            raise ConfigError(
                f"light codec needs channels (one stride-2 conv each, >= 1), M, kernel, num_classes, N >= 1; "
                f"got channels={channels}, M={M}, kernel={kernel}, num_classes={num_classes}, N={N}"
            )
        super().__init__(dict(classifier=classifier, num_classes=num_classes, split=split, channels=channels, M=M,
                              kernel=kernel, act=act, N=N, entropy=entropy, z_channels=z_channels, z_stages=z_stages)
                         | ({"server": server} if server != "tail" else {}))  # fmt: skip  (old ids unchanged)
        net = create_timm(classifier, pretrained=False, num_classes=num_classes).eval()
        stage, front_stages, tail_names = split_stages(net, split, classifier)
        front = [n for n, _ in front_stages]
        C, R = int(stage["num_chs"]), int(stage["reduction"])
        S = 2 ** len(channels)
        N = int(N or C)
        analysis: list[nn.Module] = [Normalize()]
        cin = 3
        for c in channels:
            analysis += [conv(cin, c, kernel, 2), _act(act, c)]
            cin = c
        analysis.append(conv(cin, M, 3, 1))
        self.g_a = nn.Sequential(*analysis)
        self.entropy = build_entropy(entropy, M, max(M, 32), z_channels, z_stages)
        # the server: latent -> the split stage's output (C channels at stride R), then the tail
        synthesis: list[nn.Module] = [conv(M, N, 3, 1), _act(act, N, inverse=True)]
        scale = S
        while scale > R:
            synthesis += [deconv(N, N, 3, 2), _act(act, N, inverse=True)]
            scale //= 2
        while scale < R:
            synthesis += [conv(N, N, 3, 2), _act(act, N, inverse=True)]
            scale *= 2
        synthesis += [conv(N, N, 3, 1), nn.ReLU(inplace=True), conv(N, C, 3, 1)]
        self.g_s = nn.Sequential(*synthesis) if server == "tail" else nn.Identity()
        for name in front:  # the server's copy of the model keeps none of the stages the decoder replaces
            parent, _, leaf = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, leaf, nn.Identity())
        # server="linear": the cheapest server, as the split family's: one linear layer on the pooled latent
        self.tail = FeatureTail(net, tail_names) if server == "tail" else LinearProbe(M, num_classes)
        self.feature_stages = [n for n in tail_names] if server == "tail" else []
        self.split_stage = stage["module"]
        self.analysis_stride = S
        self.latent_channels = M
        self.train()

    def analysis(self, x: Tensor) -> Tensor:
        return self.g_a(x)

    def synthesis(self, y_hat: Tensor, image_size: tuple[int, int]) -> dict[str, Tensor]:
        if isinstance(self.tail, LinearProbe):
            return {"logits": self.tail(y_hat)}
        split_features = self.g_s(y_hat)
        feats, logits = self.tail.features(split_features, self.feature_stages)
        return {"logits": logits, "features": [split_features, *feats]}

    def classifier_head_prefixes(self) -> list[str]:
        if isinstance(self.tail, LinearProbe):
            return ["tail.fc."]
        head = self.tail.model.get_classifier()
        name = next(n for n, m in self.tail.model.named_modules() if m is head)
        return [f"tail.model.{name}."]

    def reference_modules(self, side: str = "both") -> list[nn.Module]:
        return [] if side == "encoder" or isinstance(self.tail, LinearProbe) else [self.tail.model]

    def init_from_reference(self, path: str) -> list[str]:
        """The tail (every stage after ``split`` and the head) from the reference; the rest is new."""
        if isinstance(self.tail, LinearProbe):
            raise ConfigError("a light codec with server='linear' has no classifier tail to start from a reference")
        weights = check_reference_fits(path, self.config["classifier"], self.config["num_classes"])
        own = set(self.tail.model.state_dict())
        missing, unexpected = self.tail.model.load_state_dict({k: v for k, v in weights.items() if k in own}, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{path} does not fit the light codec's tail (mismatched: {(missing + unexpected)[:4]})")
        return sorted(k for k in weights if k not in own)


class FeatureTeacher(nn.Module):
    """The reference classifier, returning its features at the light codec's depths and its logits."""

    def __init__(self, classifier: nn.Module, codec: LightClientCodec) -> None:
        super().__init__()
        self.classifier = classifier  # an ImageClassifier: normalisation inside
        model = classifier.model
        _, front, tail = split_stages(model, codec.config["split"], codec.config["classifier"])
        self.front, self.tail = [n for n, _ in front], tail
        self.stages = codec.feature_stages

    @torch.no_grad()
    def forward(self, x: Tensor) -> dict[str, Tensor | list[Tensor]]:
        model = self.classifier.model
        h = self.classifier.normalize(x)
        for name in self.front:
            h = model.get_submodule(name)(h)
        feats = [h]
        for name in self.tail:
            h = model.get_submodule(name)(h)
            if name in self.stages:
                feats.append(h)
        return {"features": feats, "logits": model.forward_head(h)}
