"""Any class-per-folder image tree (``root/<class>/**/<image>``), resized to one size and held in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamodules.arrays import (
    ArrayImageDataset,
    InMemoryDataModule,
    decode_rgb,
    plain_qualities,
    progress,
    stratified_split,
)
from taskcodec.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
RESIZE_MODES = ("resize_crop", "resize")


def scan_image_folder(root: str | Path) -> dict[str, list[Path]]:
    """Map each class (sorted subfolder name) to its sorted image files, searched recursively.

    Raises:
        DataError: when ``root`` is missing, has no class folders, or a class folder has no images.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"image folder {root} does not exist or is not a folder; point data.root at a folder laid out "
            "as root/<class>/<image>"
        )
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            f"{root} has no class subfolders; expected root/<class>/<image> with extensions {', '.join(IMAGE_EXTENSIONS)}"
        )
    files = {}
    for folder in classes:
        images = sorted(
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")
        )
        if not images:
            raise DataError(
                f"class folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}); add some or remove it"
            )
        files[folder.name] = images
    return files


class ImageFolderDataModule(InMemoryDataModule):
    """A class-per-folder tree, every image resized to ``image_size`` squared and decoded once.

    ``resize="resize_crop"`` resizes the shorter side and crops the centre (aspect kept);
    ``"resize"`` stretches to the square. A seeded, stratified ``holdout_fraction`` of each class
    becomes ``holdout_set``. ``test_set`` is the ``test_root`` tree (same class names) when given,
    otherwise the hold-out itself, so model selection and reporting then share images.
    ``num_classes``, when given, must equal the number of class folders (checked in ``setup()``),
    so that a model config can read it before the tree is scanned.
    """

    def __init__(
        self,
        root: str,
        num_classes: int | None = None,
        image_size: int = 64,
        resize: str = "resize_crop",
        holdout_fraction: float = 0.1,
        test_root: str | None = None,
        batch_size: int = 128,
        num_workers: int = 2,
        seed: int = 0,
        augment: bool = True,
        pin_memory: bool = False,
        augment_policy: str | None = None,
        jpeg_augment: list[int] | None = None,
    ) -> None:
        jpeg_augment = plain_qualities(jpeg_augment)  # before save_hyperparameters(), which reads this frame's locals
        super().__init__(batch_size, num_workers, pin_memory, augment, augment_policy, jpeg_augment)
        if image_size < 8:
            raise ConfigError(f"image_size must be >= 8 pixels, got {image_size}")
        if resize not in RESIZE_MODES:
            raise ConfigError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        if not 0.0 <= holdout_fraction < 1.0:
            raise ConfigError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
        if holdout_fraction == 0.0 and test_root is None:
            raise ConfigError("holdout_fraction=0 and no test_root leaves nothing to validate or test on")
        self.save_hyperparameters()
        self.root = root
        self.image_size = image_size
        self.resize = resize
        self.holdout_fraction = holdout_fraction
        self.test_root = test_root
        self.seed = seed
        if num_classes is not None and num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1 or null, got {num_classes}")
        self.class_names: list[str] = []
        self.num_classes = num_classes  # the class folders' count after setup()

    def setup(self, stage: str | None = None) -> None:
        """Decode the tree(s) on the first call; later calls are no-ops."""
        if self.train_set is not None:
            return
        files = scan_image_folder(self.root)
        if self.num_classes is not None and self.num_classes != len(files):
            raise DataError(
                f"data.num_classes={self.num_classes} but {self.root} has {len(files)} class folders; "
                f"set data.num_classes={len(files)}"
            )
        self.class_names = list(files)
        self.num_classes = len(files)
        label_of = {name: k for k, name in enumerate(files)}
        paths = [path for name in files for path in files[name]]
        labels = np.array([label_of[name] for name in files for _ in files[name]])
        holdout = [
            min(round(self.holdout_fraction * len(files[name])), len(files[name]) - 1) for name in files
        ]
        train_idx, holdout_idx = stratified_split(labels, holdout, self.seed)
        augment = self.make_train_transform(size=self.image_size, pad=max(1, self.image_size // 16))
        # split the file list first, then decode each part straight into its own array
        train_set = self._decode([paths[k] for k in train_idx], labels[train_idx], "train")
        train_set.transform = augment
        holdout_set = self._decode([paths[k] for k in holdout_idx], labels[holdout_idx], "hold-out")
        test_set = holdout_set if self.test_root is None else self._decode_test(label_of)
        self.train_set, self.holdout_set, self.test_set = train_set, holdout_set, test_set

    def _decode_test(self, label_of: dict[str, int]) -> ArrayImageDataset:
        test_files = scan_image_folder(self.test_root)
        unknown = sorted(set(test_files) - set(label_of))
        if unknown:
            raise DataError(
                f"test_root {self.test_root} has classes {unknown} that {self.root} lacks; "
                "the two trees must use the same class folder names"
            )
        paths = [path for name in test_files for path in test_files[name]]
        labels = np.array([label_of[name] for name in test_files for _ in test_files[name]])
        return self._decode(paths, labels, "test")

    def _decode(self, paths: list[Path], labels: np.ndarray, split: str) -> ArrayImageDataset:
        size = (self.image_size, self.image_size)
        images = np.empty((len(paths), *size, 3), np.uint8)
        for k, path in enumerate(progress(paths, f"decoding {split} images")):
            try:
                data = path.read_bytes()
            except OSError as err:
                raise DataError(f"cannot read {path}: {err}; check its permissions or remove it") from err
            images[k] = decode_rgb(data, str(path), size=size, crop=self.resize == "resize_crop")
        return ArrayImageDataset(images, labels, names=[str(p) for p in paths])
