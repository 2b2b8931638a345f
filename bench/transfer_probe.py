"""Where does the frozen client lose the unseen classes: in its bottleneck, or already in A's backbone?

A linear probe on reference A's own pooled layer4 features (512 channels, no bottleneck, nothing
coded) for classes 50-99, trained with the recipe of `taskcodec adapt --server linear` (AdamW,
lr 1e-3, weight decay 1e-4, batch 32, 10 epochs) on the same class range, and tested on B's 2,500
official-val images. Paired against reference B and against the frozen client's linear probe
(the rows of results/transfer_50cls, same images). Writes results/transfer_50cls/backbone_probe.json.

    OMP_NUM_THREADS=2 python bench/transfer_probe.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datamodules.tiny_imagenet import TinyImageNetDataModule  # noqa: E402
from taskcodec.curves import paired_difference  # noqa: E402
from taskcodec.evaluation import read_per_image  # noqa: E402
from taskcodec.models.classifier import load_image_classifier  # noqa: E402
from taskcodec.provenance import bench_parser, run_provenance, start_bench, write_json  # noqa: E402


@torch.no_grad()
def pooled_features(classifier, images: np.ndarray, batch: int = 250) -> torch.Tensor:
    """Global-average-pooled last-stage features of uint8 [N, H, W, 3] images (what the fc reads)."""
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i : i + batch]).permute(0, 3, 1, 2).float() / 255
        out.append(classifier.model.forward_features(classifier.normalize(x)).mean(dim=(-2, -1)))
    return torch.cat(out)


def train_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, epochs: int, seed: int) -> nn.Linear:
    """One linear layer, AdamW as in `taskcodec adapt --server linear` (bias not decayed)."""
    torch.manual_seed(seed)
    fc = nn.Linear(x.shape[1], num_classes)
    opt = torch.optim.AdamW([{"params": [fc.weight], "weight_decay": 1e-4}, {"params": [fc.bias], "weight_decay": 0.0}], lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(fc(x[idx]), y[idx]).backward()
            opt.step()
    return fc.eval()


def main() -> None:
    # torch's own default thread count, as before the shared parser (the script is run with OMP_NUM_THREADS=2)
    p = bench_parser(__doc__, out="results/transfer_50cls", threads=torch.get_num_threads())
    p.add_argument("--reference-a", default="logs/transfer/reference_a/checkpoints/best.ckpt")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    start_bench(args)
    t0 = time.perf_counter()
    dm = TinyImageNetDataModule(root=args.data, num_classes=50, first_class=50, holdout_per_class=50, num_workers=0)
    dm.setup("fit")
    dm.setup("test")
    classifier = load_image_classifier(args.reference_a).eval()
    x_train = pooled_features(classifier, dm.train_set.images)
    x_test = pooled_features(classifier, dm.test_set.images)
    y_train = torch.as_tensor(np.asarray(dm.train_set.labels))
    fc = train_probe(x_train, y_train, 50, args.epochs, args.seed)
    with torch.no_grad():
        correct = (fc(x_test).argmax(1) == torch.as_tensor(np.asarray(dm.test_set.labels))).tolist()

    table = Path(args.out)
    per_image = read_per_image(table)
    ref = per_image["none|raw"]
    frozen = {k: v for k, v in per_image.items() if k.startswith("taskcodec") and k.split("|")[0].endswith("+adapted-linear")}
    result = {
        "what": "linear probe on reference A's pooled layer4 features (no bottleneck) for classes 50-99",
        "train_images": len(x_train), "test_images": len(correct), "epochs": args.epochs,
        "top1": float(np.mean(correct)),
        "vs_reference_b": paired_difference(correct, ref),
        "frozen_client_linear_probe_vs_this": {k: paired_difference(v, correct) for k, v in frozen.items()},
        "seconds": time.perf_counter() - t0,
        **run_provenance(),
    }  # fmt: skip
    write_json(table / "backbone_probe.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "frozen_client_linear_probe_vs_this"}, indent=1))
    for k, v in result["frozen_client_linear_probe_vs_this"].items():
        print(f"{k}: {v['diff']:+.3f} {v['bootstrap_ci95']}")


if __name__ == "__main__":
    main()
