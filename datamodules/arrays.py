"""Decoded images held in memory, and the pieces every datamodule here shares.

Small images (64x64 is 12 kB) are decoded once at ``setup()`` instead of on every epoch: on a
2-core machine JPEG decoding, not the model, would otherwise bound the training speed.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm import tqdm

from taskcodec.errors import ConfigError, DataError
from taskcodec.io import read_rgb

PROGRESS_MIN_IMAGES = 2000  # show a progress bar only when decoding more images than this


class ArrayImageDataset(Dataset):
    """Decoded images held in memory as uint8 [N, H, W, 3] RGB; labels int64 [N]; optional boxes float32 [N, 4].

    Boxes are (x0, y0, x1, y1) in pixels of the stored image. Items are ``(image, label)`` or, with
    ``return_boxes``, ``(image, label, box)``; the image is float32 [3, H, W] in [0, 1] and
    ``transform`` (tensor -> tensor) runs after that conversion. A torchvision v2 transform also
    moves the box with the image (crop, flip); any other callable sees the image only.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        boxes: np.ndarray | None = None,
        transform: Callable | None = None,
        return_boxes: bool = False,
        names: Sequence[str] | None = None,
    ) -> None:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}")
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (len(images),):
            raise ValueError(f"labels must have shape [{len(images)}], got {list(labels.shape)}")
        if boxes is not None:
            boxes = np.asarray(boxes, dtype=np.float32)
            if boxes.shape != (len(images), 4):
                raise ValueError(f"boxes must have shape [{len(images)}, 4], got {list(boxes.shape)}")
        if return_boxes and boxes is None:
            raise ValueError("return_boxes=True needs boxes")
        if names is not None and len(names) != len(images):
            raise ValueError(f"names must have {len(images)} entries, got {len(names)}")
        self.images = images
        self.labels = labels
        self.boxes = boxes
        self.transform = transform
        self.return_boxes = return_boxes
        self.names = list(names) if names is not None else None  # source file of each image

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int] | tuple[Tensor, int, Tensor]:
        image = torch.from_numpy(self.images[i]).permute(2, 0, 1).float().div_(255.0)
        label = int(self.labels[i])
        if not self.return_boxes:
            if self.transform is not None:
                image = self.transform(image)
            return image, label
        box = tv_tensors.BoundingBoxes(
            torch.from_numpy(self.boxes[i]).reshape(1, 4), format="XYXY", canvas_size=tuple(image.shape[-2:])
        )
        if isinstance(self.transform, v2.Transform):
            image, box = self.transform(image, box)
        elif self.transform is not None:
            image = self.transform(image)
        return image, label, box.as_subclass(Tensor).reshape(4) + 0.0  # + 0.0 turns -0.0 into 0.0

    def map_images(self, fn: Callable[[np.ndarray], np.ndarray]) -> ArrayImageDataset:
        """Return a new dataset with ``fn`` applied to each H x W x 3 uint8 image (e.g. a JPEG round trip).

        Labels, boxes, names and transform are kept, so ``fn`` must keep the image size.
        """
        out = np.empty_like(self.images)
        for k, image in enumerate(progress(self.images, "mapping images")):
            mapped = np.asarray(fn(image))
            if mapped.dtype != np.uint8 or mapped.shape != image.shape:
                raise ValueError(
                    f"map_images: fn must return uint8 {list(image.shape)}, got {mapped.dtype} {list(mapped.shape)}"
                )
            out[k] = mapped
        return ArrayImageDataset(out, self.labels, self.boxes, self.transform, self.return_boxes, self.names)

    def subset(self, indices: np.ndarray, transform: Callable | None = None) -> ArrayImageDataset:
        """Return the images at ``indices`` (a copy) with their own ``transform``."""
        return ArrayImageDataset(
            self.images[indices],
            self.labels[indices],
            None if self.boxes is None else self.boxes[indices],
            transform,
            self.return_boxes,
            None if self.names is None else [self.names[k] for k in indices],
        )


def progress(items: Sequence, desc: str) -> Iterable:
    """Wrap ``items`` in a tqdm bar only when there are enough of them to be worth watching."""
    return tqdm(items, desc=desc, unit="img") if len(items) > PROGRESS_MIN_IMAGES else items


def decode_rgb(
    data: bytes, name: str, size: tuple[int, int] | None = None, crop: bool = True, crop_pct: float = 1.0
) -> np.ndarray:
    """Decode image bytes to uint8 H x W x 3 RGB through :func:`taskcodec.io.read_rgb` (the one decoder).

    Modes, alpha (dropped, as torchvision's ImageFolder does), EXIF orientation and the pixel limit
    are handled there. ``size`` is (height, width): with ``crop`` the shorter side is resized to
    fit and the centre is cropped, otherwise the image is resized to ``size`` ignoring aspect.

    Raises:
        DataError: naming ``name`` when the image cannot be read or converted.
    """
    return read_rgb(data, name, size=size, crop=crop, crop_pct=crop_pct)


def download_and_verify(url: str, dest: str | Path, md5: str) -> Path:
    """Download ``url`` to ``dest`` through a ``.part`` file, check its MD5, then rename it into place.

    Raises:
        DataError: naming the URL and path on any network or file error or a checksum mismatch;
            no partial file is left behind.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.md5(usedforsecurity=False)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != md5:
            raise DataError(
                f"download of {url} to {dest} has MD5 {digest.hexdigest()}, expected {md5}: the file is "
                "corrupt or not the official one. It was deleted; try again, or download it yourself "
                "and point data.root at it."
            )
        os.replace(part, dest)
    except (OSError, ValueError) as err:  # urllib's URLError is an OSError
        raise DataError(
            f"could not download {url} to {dest}: {err}. Check the network and free space, or download "
            "it yourself and point data.root at it."
        ) from err
    finally:
        part.unlink(missing_ok=True)
    return dest


def stratified_split(
    labels: np.ndarray, holdout_per_class: int | Sequence[int], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train_idx, holdout_idx), holding out a seeded random sample of each class.

    ``holdout_per_class`` is one count for every class or a count per label value. Each class is
    shuffled by its own generator seeded with (seed, label), so a class's hold-out does not depend
    on which other classes are present. Both index arrays come back sorted.
    """
    labels = np.asarray(labels)
    train, holdout = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        k = holdout_per_class if np.isscalar(holdout_per_class) else holdout_per_class[int(label)]
        k = int(k)
        if k < 0:
            raise ConfigError(f"holdout_per_class must be >= 0, got {k}")
        if k > len(members):
            raise DataError(
                f"class {int(label)} has {len(members)} images, fewer than the {k} to hold out; "
                "lower holdout_per_class or add images"
            )
        order = np.random.default_rng([seed, int(label)]).permutation(members)
        holdout.append(order[:k])
        train.append(order[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(holdout))


#: augmentation policies from torchvision (the implementations timm's recipes also use)
AUGMENT_POLICIES = {"trivialaugment": v2.TrivialAugmentWide, "randaugment": v2.RandAugment}


def plain_qualities(jpeg_augment: Sequence[int] | None) -> list[int] | None:
    """``[lo, hi]`` as a plain list of ints (not Hydra's ListConfig), so checkpoints holding it load with weights_only."""
    return [int(q) for q in jpeg_augment] if jpeg_augment is not None else None


def train_transform(
    pad: int = 4,
    size: int | tuple[int, int] = 64,
    policy: str | None = None,
    jpeg_quality: Sequence[int] | None = None,
    jpeg_prob: float = 0.5,
    min_scale: float | None = None,
) -> Callable:
    """Random ``size`` crop of the image zero-padded by ``pad`` pixels, then a random horizontal flip.

    Zero padding (the CIFAR recipe) rather than reflect, because torchvision can move boxes
    through a constant pad but not through a reflect pad. With ``min_scale`` the crop is instead a
    random resized crop (area share ``min_scale``..1, aspect 3/4..4/3, the ImageNet recipe) resized
    to ``size``, for images held larger than the model reads. ``policy`` adds TrivialAugment or
    RandAugment; ``jpeg_quality=(lo, hi)`` re-codes the image as JPEG at a random quality in that
    range with probability ``jpeg_prob`` (a classifier robust to coding). Both run on uint8, as
    the policies expect, and hand back float images in [0, 1]. A resized crop also goes through
    uint8: its resampling leaves values off the 8-bit grid and a rounding error outside [0, 1],
    which the codec refuses, and every image it is tested on is 8-bit.
    """
    crop = (v2.RandomCrop(size, padding=pad, fill=0) if min_scale is None
            else v2.RandomResizedCrop(size, scale=(min_scale, 1.0), antialias=True))  # fmt: skip
    steps: list = [crop, v2.RandomHorizontalFlip()]
    if policy is None and jpeg_quality is None and min_scale is None:
        return v2.Compose(steps)
    if policy is not None and policy not in AUGMENT_POLICIES:
        raise ConfigError(f"augment_policy must be one of {sorted(AUGMENT_POLICIES)} or null, got {policy!r}")
    steps.append(v2.ToDtype(torch.uint8, scale=True))
    if policy is not None:
        steps.append(AUGMENT_POLICIES[policy]())
    if jpeg_quality is not None:
        lo, hi = (int(q) for q in jpeg_quality)
        if not 1 <= lo <= hi <= 100 or not 0 < jpeg_prob <= 1:
            raise ConfigError(f"jpeg_augment must be [lo, hi] with 1 <= lo <= hi <= 100 (got {list(jpeg_quality)})")
        steps.append(v2.RandomApply([v2.JPEG((lo, hi))], p=jpeg_prob))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(steps)


class InMemoryDataModule(pl.LightningDataModule):
    """Data loaders over ``train_set``, ``holdout_set`` (Lightning's "val") and ``test_set``.

    Subclasses fill the three ArrayImageDatasets in ``setup()``; the hold-out is carved out of the
    training data for model selection, the test set is what results are reported on.
    """

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        pin_memory: bool,
        augment: bool = True,
        augment_policy: str | None = None,
        jpeg_augment: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        # the training recipe's data options, the same on every dataset (the reference sets augment_policy)
        self.augment = augment
        self.augment_policy = augment_policy
        self.jpeg_augment = plain_qualities(jpeg_augment)
        train_transform(policy=augment_policy, jpeg_quality=self.jpeg_augment)  # bad values fail here, not after decoding
        self.train_set: ArrayImageDataset | None = None
        self.holdout_set: ArrayImageDataset | None = None
        self.test_set: ArrayImageDataset | None = None

    def make_train_transform(self, size: int, pad: int = 4, min_scale: float | None = None) -> Callable | None:
        """The training augmentation at ``size`` with this module's recipe options (None when ``augment`` is off)."""
        if not self.augment:
            return None
        return train_transform(pad=pad, size=size, policy=self.augment_policy, jpeg_quality=self.jpeg_augment,
                               min_scale=min_scale)  # fmt: skip

    def _loader(self, dataset: ArrayImageDataset | None, stage: str, shuffle: bool) -> DataLoader:
        if dataset is None:
            self.setup(stage)
            dataset = {"fit": self.train_set, "validate": self.holdout_set}.get(stage, self.test_set)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, "fit", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.holdout_set, "validate", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, "test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, "predict", shuffle=False)
