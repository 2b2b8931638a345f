"""Tiny ImageNet (CS231n) in its official layout, read straight from the zip or an extracted folder.

Layout, under one top folder (any name, e.g. ``tiny-imagenet-200/``)::

    wnids.txt                               class ids, one per line; the first K are used
    words.txt                               "wnid<TAB>names"
    train/<wnid>/images/<wnid>_<n>.JPEG     64x64 training images
    train/<wnid>/<wnid>_boxes.txt           "<file><TAB>x0<TAB>y0<TAB>x1<TAB>y1"
    val/images/val_<n>.JPEG                 the labelled evaluation split (our test set)
    val/val_annotations.txt                 "<file><TAB><wnid><TAB>x0<TAB>y0<TAB>x1<TAB>y1"

The official ``test/`` folder has no labels and is ignored. Boxes are kept as written in the
files (inclusive pixel coordinates).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamodules.arrays import (
    ArrayImageDataset,
    InMemoryDataModule,
    decode_rgb,
    download_and_verify,
    plain_qualities,
    progress,
    stratified_split,
)
from taskcodec.datasets import (
    _IMAGE_SUFFIXES,
    _LAYOUT_HINT,
    _numeric_key,
    _TinyImageNetTree,
    locate_tiny_imagenet,
)
from taskcodec.errors import ConfigError, DataError
from taskcodec.losses import UNLABELED

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"  # official zip, 248,100,043 bytes
TINY_IMAGENET_FILENAME = "tiny-imagenet-200.zip"


class TinyImageNetDataModule(InMemoryDataModule):
    """Classes ``first_class .. first_class + num_classes - 1`` of Tiny ImageNet, decoded into memory once.

    ``train_set`` is train minus a seeded, stratified hold-out of ``holdout_per_class`` images
    per class (augmented if ``augment``); ``holdout_set`` is that hold-out (Lightning's "val",
    for model selection); ``test_set`` is the official val split, on which results are reported.
    ``train_per_class`` keeps the first N images of each class (by file number) before the split.
    """

    def __init__(
        self,
        root: str,
        num_classes: int = 10,
        first_class: int = 0,
        train_per_class: int | None = None,
        holdout_per_class: int = 50,
        batch_size: int = 128,
        num_workers: int = 2,
        seed: int = 0,
        download: bool = False,
        return_boxes: bool = False,
        pin_memory: bool = False,
        augment: bool = True,
        augment_policy: str | None = None,
        jpeg_augment: list[int] | None = None,
        extra_classes: int = 0,
    ) -> None:
        jpeg_augment = plain_qualities(jpeg_augment)  # before save_hyperparameters(), which reads this frame's locals
        super().__init__(batch_size, num_workers, pin_memory, augment, augment_policy, jpeg_augment)
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        if first_class < 0:
            raise ConfigError(f"first_class must be >= 0, got {first_class}")
        if holdout_per_class < 0:
            raise ConfigError(f"holdout_per_class must be >= 0, got {holdout_per_class}")
        if extra_classes < 0:
            raise ConfigError(f"extra_classes must be >= 0, got {extra_classes}")
        if train_per_class is not None and train_per_class <= holdout_per_class:
            raise ConfigError(
                f"train_per_class={train_per_class} must exceed holdout_per_class={holdout_per_class} "
                "so that some images are left to train on"
            )
        self.save_hyperparameters()
        self.root = root
        self.num_classes = num_classes
        self.first_class = first_class
        self.train_per_class = train_per_class
        self.holdout_per_class = holdout_per_class
        self.seed = seed
        self.download = download
        self.return_boxes = return_boxes
        self.extra_classes = extra_classes
        self.class_names: list[str] = []
        self.class_words: list[str] = []
        self.extra_class_names: list[str] = []

    def prepare_data(self) -> None:
        """Download the official zip when ``download`` is set and ``root`` holds no copy (rank 0 only)."""
        if self.download and locate_tiny_imagenet(self.root) is None:
            dest = Path(self.root).expanduser()
            dest = dest if dest.suffix == ".zip" else dest / TINY_IMAGENET_FILENAME
            download_and_verify(TINY_IMAGENET_URL, dest, TINY_IMAGENET_MD5)

    def setup(self, stage: str | None = None) -> None:
        """Decode all three sets ("test"/"predict" decode only the test set); later calls reuse them."""
        need_train = stage not in ("test", "predict") and self.train_set is None
        need_test = self.test_set is None
        if not (need_train or need_test):
            return
        path = locate_tiny_imagenet(self.root)
        if path is None:
            raise DataError(
                f"Tiny ImageNet not found at {self.root!r}: no zip, no wnids.txt and no folder holding one. "
                "Point data.root at tiny-imagenet-200.zip (or tiny-imagenet-100.zip), at its extracted "
                f"folder or at the folder containing it, or set data.download=true to fetch {TINY_IMAGENET_URL}."
            )
        tree = _TinyImageNetTree(path)
        try:
            self._read_classes(tree)
            if need_train:
                self._build_train(tree)
            if need_test:
                self._build_test(tree)
        finally:
            tree.close()

    def _read_classes(self, tree: _TinyImageNetTree) -> None:
        wnids = tree.text_lines("wnids.txt")
        if len(set(wnids)) != len(wnids):
            raise DataError(f"{tree.where('wnids.txt')} lists a class twice; {_LAYOUT_HINT}")
        if self.first_class + self.num_classes > len(wnids):
            raise ConfigError(
                f"first_class={self.first_class} + num_classes={self.num_classes} but {tree.where('wnids.txt')} "
                f"lists only {len(wnids)} classes; set data.first_class + data.num_classes <= {len(wnids)}"
            )
        self.class_names = wnids[self.first_class : self.first_class + self.num_classes]
        others = wnids[self.first_class + self.num_classes :] + wnids[: self.first_class]
        if self.extra_classes > len(others):
            raise ConfigError(f"extra_classes={self.extra_classes} but {tree.where('wnids.txt')} has only {len(others)} "
                              f"classes besides the {self.num_classes} of the task; set data.extra_classes <= {len(others)}")  # fmt: skip
        self.extra_class_names = others[: self.extra_classes]
        wanted = set(self.class_names)
        words = {}
        if tree.exists("words.txt"):  # only names for printing, so a missing file is no error
            for line in tree.text_lines("words.txt"):
                wnid, _, names = line.partition("\t")
                if wnid in wanted:
                    words[wnid] = names.split(",")[0].strip()
        self.class_words = [words.get(w, w) for w in self.class_names]

    def _class_files(self, tree: _TinyImageNetTree, wnid: str) -> tuple[list[str], list]:
        """One class's train files (the first ``train_per_class`` by file number) and their boxes."""
        folder = f"train/{wnid}/images"
        names = sorted((n for n in tree.list_files(folder) if n.lower().endswith(_IMAGE_SUFFIXES)), key=_numeric_key)
        if not names:
            raise DataError(f"wnids.txt lists {wnid} but {tree.where(folder)}/ holds no images; {_LAYOUT_HINT}")
        wanted = self.train_per_class or len(names)
        if len(names) < max(wanted, self.holdout_per_class + 1):
            raise DataError(
                f"{tree.where(folder)} has {len(names)} images, fewer than asked for (train_per_class="
                f"{self.train_per_class}, holdout_per_class={self.holdout_per_class}); lower them"
            )
        names = names[:wanted]
        box_of = self._read_boxes(tree, f"train/{wnid}/{wnid}_boxes.txt", columns=4)
        for name in names:
            if name not in box_of:
                raise DataError(f"{tree.where(f'train/{wnid}/{wnid}_boxes.txt')} has no line for {name}")
        return [f"{folder}/{n}" for n in names], [box_of[n][1] for n in names]

    def _build_train(self, tree: _TinyImageNetTree) -> None:
        files, labels, boxes = [], [], []
        for label, wnid in enumerate(self.class_names):
            f, b = self._class_files(tree, wnid)
            files += f
            labels += [label] * len(f)
            boxes += b
        # split the file list first, then decode each part straight into its own array
        labels_np, boxes_np = np.array(labels), np.array(boxes, np.float32).reshape(-1, 4)
        train_idx, holdout_idx = stratified_split(labels_np, self.holdout_per_class, self.seed)
        # images of the extra classes join the training split only, unlabelled (UNLABELED): what learns
        # from them is the label-free part of a loss (the teacher's features, distillation)
        extra_files, extra_boxes = [], []
        for wnid in self.extra_class_names:
            f, b = self._class_files(tree, wnid)
            extra_files += f
            extra_boxes += b
        augment = self.make_train_transform(size=64, pad=4)
        parts = {
            "train": ([files[k] for k in train_idx] + extra_files,
                      np.concatenate([labels_np[train_idx], np.full(len(extra_files), UNLABELED)]),
                      np.concatenate([boxes_np[train_idx], np.array(extra_boxes, np.float32).reshape(-1, 4)]), augment),
            "hold-out": ([files[k] for k in holdout_idx], labels_np[holdout_idx], boxes_np[holdout_idx], None),
        }  # fmt: skip
        sets = []
        for split, (names, split_labels, split_boxes, transform) in parts.items():
            images = self._decode(tree, names, split)
            sets.append(ArrayImageDataset(images, split_labels, split_boxes, transform, self.return_boxes, names))
        self.train_set, self.holdout_set = sets  # assigned together, so a failed decode leaves neither

    def _build_test(self, tree: _TinyImageNetTree) -> None:
        label_of = {wnid: k for k, wnid in enumerate(self.class_names)}
        all_wnids = set(tree.text_lines("wnids.txt"))
        rows = self._read_boxes(tree, "val/val_annotations.txt", columns=5)
        files, labels, boxes = [], [], []
        for name in sorted(rows, key=_numeric_key):
            wnid, box = rows[name]
            if wnid not in all_wnids:
                raise DataError(
                    f"{tree.where('val/val_annotations.txt')} labels {name} with {wnid}, not in wnids.txt"
                )
            if not tree.exists(f"val/images/{name}"):
                raise DataError(
                    f"{tree.where('val/val_annotations.txt')} names {name} but {tree.where('val/images/' + name)} "
                    f"does not exist; {_LAYOUT_HINT}"
                )
            if wnid in label_of:
                files.append(f"val/images/{name}")
                labels.append(label_of[wnid])
                boxes.append(box)
        if not files:
            raise DataError(
                f"{tree.where('val/val_annotations.txt')} has no images of classes {self.first_class}.."
                f"{self.first_class + self.num_classes - 1}"
            )
        self.test_set = ArrayImageDataset(
            self._decode(tree, files, "val"),
            np.array(labels),
            np.array(boxes),
            None,
            self.return_boxes,
            files,
        )

    @staticmethod
    def _read_boxes(tree: _TinyImageNetTree, rel: str, columns: int) -> dict[str, tuple[str, list[float]]]:
        """Parse "<file> [wnid] x0 y0 x1 y1" lines into {file: (wnid or "", box)}."""
        rows = {}
        for number, line in enumerate(tree.text_lines(rel), start=1):
            fields = line.split()
            try:
                if len(fields) != 1 + columns:
                    raise ValueError(f"{len(fields)} fields")
                rows[fields[0]] = ("" if columns == 4 else fields[1], [float(v) for v in fields[-4:]])
            except ValueError as err:
                expected = "file wnid x0 y0 x1 y1" if columns == 5 else "file x0 y0 x1 y1"
                raise DataError(
                    f"{tree.where(rel)} line {number} ({line!r}) does not parse ({err}); expected '{expected}'"
                ) from err
        return rows

    @staticmethod
    def _decode(tree: _TinyImageNetTree, files: list[str], split: str) -> np.ndarray:
        if not files:
            return np.empty((0, 64, 64, 3), np.uint8)
        first = decode_rgb(tree.read(files[0]), tree.where(files[0]))
        images = np.empty((len(files), *first.shape), np.uint8)
        for k, rel in enumerate(progress(files, f"decoding tiny-imagenet {split}")):
            image = decode_rgb(tree.read(rel), tree.where(rel)) if k else first
            if image.shape != first.shape:
                raise DataError(
                    f"{tree.where(rel)} is {image.shape[1]}x{image.shape[0]}, but the other images are "
                    f"{first.shape[1]}x{first.shape[0]}; Tiny ImageNet images must all be the same size "
                    "(use ImageFolderDataModule, which resizes, for other data)"
                )
            images[k] = image
        return images
