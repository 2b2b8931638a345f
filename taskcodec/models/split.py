"""The ``split`` family: the entropy bottleneck sits *inside* a timm classifier (split computing).

The client runs the classifier's stages up to ``split`` (any stage in timm's ``feature_info``),
then analysis layers down to ``M`` channels (optionally downsampling with strided convolutions),
quantises and entropy-codes. The server decodes, the synthesis layers go back to the stage's
width, and the remaining stages and the head run unchanged (Entropic Student, SC2, BottleFit).
Every part that exists in the reference classifier starts from it; only the bottleneck is new.

Any timm model whose ``forward_features`` runs its top-level children in order works (ResNets,
EfficientNets, ConvNeXts, ...); the constructor checks that claim on a random input.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from compressai.layers import GDN
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from taskcodec.errors import CheckpointError, ConfigError
from taskcodec.models.base import TaskCodecBase
from taskcodec.models.classifier import Normalize, check_reference_fits, create_timm
from taskcodec.models.entropy import build_entropy
from taskcodec.models.registry import register_codec

_HEAD_NAMES = {"global_pool", "fc", "classifier", "head", "head_drop", "fc_norm", "pre_logits", "norm_pre"}


def _stages(model: nn.Module, split_module: str) -> list[tuple[str, nn.Module]]:
    """The model's top-level children in order, with the container of ``split_module`` expanded."""
    items = []
    for name, child in model.named_children():
        if split_module.startswith(name + ".") and isinstance(child, nn.Sequential):
            items += [(f"{name}.{n}", c) for n, c in child.named_children()]
        else:
            items.append((name, child))
    return items


def _resolve_split(model: nn.Module, split: str | int, name: str) -> dict:
    info = list(model.feature_info) if hasattr(model, "feature_info") else []
    names = [f["module"] for f in info]
    if isinstance(split, int) or (isinstance(split, str) and split.isdigit()):
        i = int(split)
        if not 0 <= i < len(info):
            raise ConfigError(f"split index {i} is outside 0..{len(info) - 1} for {name!r} (stages: {names})")
        return info[i]
    for f in info:
        if f["module"] == split:
            return f
    raise ConfigError(f"split {split!r} is not a stage of {name!r}; choose one of {names} (or an index)")


def split_stages(net: nn.Module, split: str | int, name: str) -> tuple[dict, list[tuple[str, nn.Module]], list[str]]:
    """(the split stage's feature_info, the ``(name, module)`` stages up to it, the names of those after it, head excluded)."""
    stage = _resolve_split(net, split, name)
    items = _stages(net, stage["module"])
    cut = [n for n, _ in items].index(stage["module"]) + 1
    return stage, items[:cut], [n for n, _ in items[cut:] if n not in _HEAD_NAMES]


class LinearProbe(nn.Module):
    """The cheapest server: global-average-pool the decoded latent, then one linear layer."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.mean(dim=(-2, -1)))


class TimmTail(nn.Module):
    """The server's remaining stages of a timm model, then its own ``forward_head``."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, x: Tensor) -> Tensor:
        for name in self.names:
            x = self.model.get_submodule(name)(x)
        return self.model.forward_head(x)


@register_codec("split")
class SplitCodec(TaskCodecBase):
    """Classifier front + bottleneck on the client, bottleneck + classifier tail on the server."""

    encoder_parts = ("g_a", "entropy")
    decoder_parts = ("entropy", "g_s", "tail")

    def __init__(
        self,
        classifier: str = "resnet18",
        num_classes: int = 10,
        split: str | int = "layer3",
        M: int = 32,
        N: int | None = None,
        downsample: int = 0,
        entropy: str = "factorized",
        z_channels: int = 16,
        server: str = "tail",
    ) -> None:
        if server not in ("tail", "linear"):
            raise ConfigError(f"split codec server must be 'tail' or 'linear', got {server!r}")
        if M < 1 or downsample < 0 or num_classes < 1 or z_channels < 1 or (N is not None and N < 1):
            raise ConfigError(
                f"split codec needs M, num_classes, z_channels, N >= 1 and downsample >= 0; "
                f"got M={M}, num_classes={num_classes}, z_channels={z_channels}, N={N}, downsample={downsample}"
            )
        super().__init__(dict(classifier=classifier, num_classes=num_classes, split=split, M=M, N=N,
                              downsample=downsample, entropy=entropy, z_channels=z_channels)
                         | ({"server": server} if server != "tail" else {}))  # fmt: skip  (old ids unchanged)
        net = create_timm(classifier, pretrained=False, num_classes=num_classes).eval()
        stage, front, tail_names = split_stages(net, split, classifier)
        C, N = int(stage["num_chs"]), int(N or stage["num_chs"])
        self._check_sequential(net, front, tail_names, int(stage["reduction"]), classifier)

        analysis: list[nn.Module] = []
        synthesis: list[nn.Module] = [conv(M, N, 1, 1), GDN(N, inverse=True)]
        cin = C
        for _ in range(downsample):
            analysis += [conv(cin, N, 3, 2), GDN(N)]
            synthesis += [deconv(N, N, 3, 2), GDN(N, inverse=True)]
            cin = N
        analysis += [conv(cin, N, 3, 1), GDN(N), conv(N, M, 1, 1)]
        synthesis.append(conv(N, C, 3, 1))
        self._front_names = {n: n.replace(".", "_") for n, _ in front}
        self.g_a = nn.Sequential(
            OrderedDict([("normalize", Normalize()), *((self._front_names[n], m) for n, m in front),
                         ("bottleneck", nn.Sequential(*analysis))])
        )  # fmt: skip
        self.entropy = build_entropy(entropy, M, N, z_channels, z_stages=1)
        self.g_s = nn.Sequential(*synthesis) if server == "tail" else nn.Identity()
        for name, _ in front:  # the server's copy of the model keeps no client stages
            parent, _, leaf = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, leaf, nn.Identity())
        self.tail = TimmTail(net, tail_names) if server == "tail" else LinearProbe(M, num_classes)
        self.analysis_stride = int(stage["reduction"]) * 2**downsample
        self.latent_channels = M
        self.train()

    @staticmethod
    def _check_sequential(net: nn.Module, front: list, tail_names: list[str], reduction: int, name: str) -> None:
        size = max(64, 2 * reduction)
        x = torch.rand(1, 3, size, size)
        try:
            with torch.no_grad():
                want = net(x)
                h = x
                for _, m in front:
                    h = m(h)
                for n in tail_names:
                    h = net.get_submodule(n)(h)
                got = net.forward_head(h)
            ok = got.shape == want.shape and torch.allclose(got, want, atol=1e-4, rtol=1e-4)
        except Exception:  # noqa: BLE001  (a model with fixed input sizes or odd forward fails here)
            ok = False
        if not ok:
            raise ConfigError(
                f"timm model {name!r} does not run as the sequence of its top-level stages, so it cannot be "
                "split; use a convolutional model such as resnet18, efficientnet_b0 or convnext_atto"
            )

    def analysis(self, x: Tensor) -> Tensor:
        return self.g_a(x)

    def synthesis(self, y_hat: Tensor, image_size: tuple[int, int]) -> dict[str, Tensor]:
        return {"logits": self.tail(self.g_s(y_hat))}

    def classifier_head_prefixes(self) -> list[str]:
        if isinstance(self.tail, LinearProbe):
            return ["tail.fc."]
        head = self.tail.model.get_classifier()
        name = next(n for n, m in self.tail.model.named_modules() if m is head)
        return [f"tail.model.{name}."]

    def reference_modules(self, side: str = "both") -> list[nn.Module]:
        front = [self.g_a.get_submodule(n) for n in self._front_names.values()]
        back = [self.tail.model] if isinstance(self.tail, TimmTail) else []
        return {"encoder": front, "decoder": back}.get(side, front + back)

    def init_from_reference(self, path: str) -> list[str]:
        """Front stages into ``g_a``, the rest into the tail; every tensor must fit."""
        weights = check_reference_fits(path, self.config["classifier"], self.config["num_classes"])
        front, tail = {}, {}
        for k, v in weights.items():
            owner = next((n for n in self._front_names if k.startswith(n + ".")), None)
            if owner:
                front[self._front_names[owner] + k[len(owner) :]] = v
            else:
                tail[k] = v
        missing, unexpected = self.g_a.load_state_dict(front, strict=False)
        if not isinstance(self.tail, TimmTail):
            raise ConfigError("a split codec with server='linear' has no classifier tail to start from a reference")
        missing_tail, unexpected_tail = self.tail.model.load_state_dict(tail, strict=False)
        bad = [*unexpected, *unexpected_tail]
        stale = [k for k in missing + missing_tail if not k.startswith("bottleneck.")]
        if bad or stale:
            raise CheckpointError(f"{path} does not fit the split codec's classifier (mismatched: {(bad + stale)[:4]})")
        return []
