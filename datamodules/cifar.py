"""CIFAR-10 / CIFAR-100 through torchvision, wrapped in the same in-memory datasets as the others."""

from __future__ import annotations

import numpy as np
from torchvision.datasets import CIFAR10, CIFAR100

from datamodules.arrays import ArrayImageDataset, InMemoryDataModule, plain_qualities, stratified_split
from taskcodec.errors import ConfigError, DataError


class CIFARDataModule(InMemoryDataModule):
    """CIFAR-``variant`` (10 or 100): train minus a stratified hold-out, and the official test split.

    ``holdout_per_class`` defaults to a tenth of each class (500 for CIFAR-10, 50 for CIFAR-100).
    ``num_classes`` is optional and only checked against ``variant`` (model configs read it).
    """

    def __init__(
        self,
        root: str,
        variant: int = 10,
        num_classes: int | None = None,
        holdout_per_class: int | None = None,
        batch_size: int = 128,
        num_workers: int = 2,
        seed: int = 0,
        download: bool = False,
        augment: bool = True,
        pin_memory: bool = False,
        augment_policy: str | None = None,
        jpeg_augment: list[int] | None = None,
    ) -> None:
        jpeg_augment = plain_qualities(jpeg_augment)  # before save_hyperparameters(), which reads this frame's locals
        super().__init__(batch_size, num_workers, pin_memory, augment, augment_policy, jpeg_augment)
        if variant not in (10, 100):
            raise ConfigError(f"variant must be 10 or 100 (CIFAR-10 or CIFAR-100), got {variant}")
        if num_classes not in (None, variant):
            raise ConfigError(
                f"num_classes={num_classes} does not match CIFAR-{variant}; set it to {variant}"
            )
        if holdout_per_class is None:
            holdout_per_class = 500 if variant == 10 else 50
        per_class = 50000 // variant  # training images per class
        if not 0 <= holdout_per_class < per_class:
            raise ConfigError(
                f"holdout_per_class must be in [0, {per_class}) for CIFAR-{variant}, got {holdout_per_class}"
            )
        self.save_hyperparameters()
        self.root = root
        self.variant = variant
        self.holdout_per_class = holdout_per_class
        self.seed = seed
        self.download = download
        self.num_classes = variant
        self.class_names: list[str] = []

    def _load(self, train: bool, download: bool) -> CIFAR10:
        cls = CIFAR10 if self.variant == 10 else CIFAR100
        try:
            return cls(self.root, train=train, download=download)
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
            raise DataError(
                f"CIFAR-{self.variant} not found or corrupt under {self.root!r} ({err}). Set data.download=true "
                f"to fetch {cls.url}, or put the extracted {cls.base_folder}/ folder there."
            ) from err
        except OSError as err:  # network errors while downloading
            raise DataError(
                f"could not download CIFAR-{self.variant} from {cls.url} to {self.root!r}: {err}"
            ) from err

    def prepare_data(self) -> None:
        """Download both splits when ``download`` is set (rank 0 only)."""
        if self.download:
            self._load(train=True, download=True)
            self._load(train=False, download=True)

    def setup(self, stage: str | None = None) -> None:
        """Wrap the already-decoded arrays on the first call; later calls are no-ops."""
        if self.train_set is not None:
            return
        train, test = self._load(train=True, download=False), self._load(train=False, download=False)
        self.class_names = list(train.classes)
        everything = ArrayImageDataset(train.data, np.array(train.targets))
        train_idx, holdout_idx = stratified_split(everything.labels, self.holdout_per_class, self.seed)
        self.train_set = everything.subset(train_idx, self.make_train_transform(size=32, pad=4))
        self.holdout_set = everything.subset(holdout_idx)
        self.test_set = ArrayImageDataset(test.data, np.array(test.targets))
