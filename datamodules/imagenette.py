"""Imagenette (fast.ai's 10 ImageNet classes) at a size a device sends, decoded into memory once.

Reads, through one ``data.root``:

* the shared ``imagenette-160.zip`` (``imagenette-160/{train,val}/<wnid>/*.JPEG`` + ``wnids.txt``,
  ``words.txt``), or any zip of that layout;
* the official archives ``imagenette2-160.tgz`` / ``imagenette2-320.tgz`` / ``imagenette2.tgz``
  (``imagenette2-*/{train,val}/<wnid>/*.JPEG``), read straight from the tar;
* either one extracted, or the folder holding exactly one of them.

The official ``val`` folder is the test split (what results are reported on); model selection
uses a seeded, stratified hold-out carved from ``train``. Training images are kept at
``store_size`` (shorter side resized, centre crop) and augmented with a random resized crop to
``size`` + flip (+ the reference recipe's policy); hold-out and test images are resized and
centre-cropped once, in timm's convention: shorter side to ``floor(size / crop_pct)``, centre
``size`` crop. Exports of models trained here record that crop, so ``taskcodec compress`` and the
clients code any photo the way the test images were prepared.
"""

from __future__ import annotations

import re
import tarfile
import zipfile
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
from taskcodec.errors import ConfigError, DataError
from taskcodec.preprocessing import preprocessing_config

#: the official archive (shorter side 160, aspect kept) and its MD5, as torchvision's Imagenette lists it
IMAGENETTE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz"
IMAGENETTE_MD5 = "e793b78cc4c9e9a4ccc0c1155377a412"
IMAGENETTE_FILENAME = "imagenette2-160.tgz"
#: the official archives name no classes; these are fast.ai's words for the ten wnids
IMAGENETTE_WORDS = {
    "n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn", "n03417042": "garbage truck",
    "n03425413": "gas pump", "n03445777": "golf ball", "n03888257": "parachute",
}  # fmt: skip
_LAYOUT = "expected <top>/train/<wnid>/<image> and <top>/val/<wnid>/<image> (Imagenette's layout)"
_ENTRY = re.compile(r"^(?P<top>(?:.*/)?)(?P<split>train|val)/(?P<wnid>[^/]+)/(?P<file>[^/]+\.(?:jpe?g|png))$", re.I)
_ARCHIVE_SUFFIXES = (".zip", ".tgz", ".tar.gz", ".tar")

#: (split, wnid, path inside the source) -> encoded bytes
Files = dict[tuple[str, str, str], bytes]


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_ARCHIVE_SUFFIXES)


def locate_imagenette(root: str | Path) -> Path | None:
    """The archive or top folder ``root`` points at (or holds exactly one of), or None when there is none."""
    root = Path(root).expanduser()
    if root.is_file():
        return root
    if (root / "train").is_dir() and (root / "val").is_dir():
        return root
    if not root.is_dir():
        return None
    found = sorted(p for p in root.iterdir() if (p / "train").is_dir() and (p / "val").is_dir())
    found = found or sorted(p for p in root.iterdir() if _is_archive(p) and "imagenette" in p.name.lower())
    if len(found) > 1:
        raise DataError(f"{root} holds several Imagenette copies ({', '.join(p.name for p in found)}); "
                        "point data.root at the one to use")  # fmt: skip
    return found[0] if found else None


def _keep(entries: Files, source: Path) -> Files:
    """Entries under exactly one top folder, keyed without it."""
    tops = {top for top, _ in entries}
    if len(tops) != 1:
        raise DataError(f"{source} holds images under {len(tops)} top folders ({sorted(tops)[:3]}); {_LAYOUT}")
    return {key: data for (_, key), data in entries.items()}


def read_imagenette_files(path: Path) -> tuple[Files, list[str]]:
    """Every train/val image's bytes in ``path`` (zip, tar or folder), and the lines of its ``words.txt`` if any."""
    entries: dict = {}
    words: list[str] = []

    def add(name: str, read) -> None:
        nonlocal words
        m = _ENTRY.match(name)
        if m and not m["file"].startswith("."):
            entries[(m["top"], (m["split"], m["wnid"], name))] = read()
        elif re.fullmatch(r"(?:[^/]+/)?words\.txt", name):
            words = read().decode("utf-8", "replace").splitlines()

    try:
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file():
                    add(file.relative_to(path).as_posix(), file.read_bytes)
        elif path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                for name in zf.namelist():
                    if not name.endswith("/"):
                        add(name, lambda n=name: zf.read(n))
        else:  # a tar read in one sequential pass: seeking in a .tgz would decompress it again for each file
            with tarfile.open(path, "r:*") as tf:
                for member in tf:
                    if member.isfile():
                        add(member.name.removeprefix("./"), lambda m=member: tf.extractfile(m).read())
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise DataError(f"cannot read Imagenette from {path}: {err}; the archive may be truncated or corrupt, "
                        "download it again") from err  # fmt: skip
    if not entries:
        raise DataError(f"{path} holds no Imagenette images; {_LAYOUT}")
    return _keep(entries, path), words


class ImagenetteDataModule(InMemoryDataModule):
    """Imagenette's train (minus a hold-out) / hold-out / val, at ``size`` pixels.

    Args:
        root: the zip, the official .tgz, an extracted folder, or a folder holding one of them.
        num_classes: must equal the classes found (10); the model config reads it before setup.
        size: the side the classifier reads (training crop and evaluation crop).
        crop_pct: evaluation resizes the shorter side to ``floor(size / crop_pct)`` and crops the centre.
        store_size: training images are held at this side (shorter side, centre crop) for the random crop.
        min_scale: the random resized crop's smallest area share (fast.ai's Imagenette recipe: 0.35).
        holdout_per_class: training images per class held out for model selection.
        download: fetch the official ``imagenette2-160.tgz`` (MD5-checked) when ``root`` holds no copy.
    """

    def __init__(
        self,
        root: str,
        num_classes: int = 10,
        size: int = 128,
        crop_pct: float = 0.875,
        store_size: int = 160,
        min_scale: float = 0.35,
        holdout_per_class: int = 50,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        download: bool = False,
        pin_memory: bool = False,
        augment: bool = True,
        augment_policy: str | None = None,
        jpeg_augment: list[int] | None = None,
    ) -> None:
        jpeg_augment = plain_qualities(jpeg_augment)  # before save_hyperparameters(), which reads this frame's locals
        super().__init__(batch_size, num_workers, pin_memory, augment, augment_policy, jpeg_augment)
        if size < 16:
            raise ConfigError(f"data.size must be >= 16 pixels, got {size}")
        if not 0.1 <= crop_pct <= 1.0:
            raise ConfigError(f"data.crop_pct must be in [0.1, 1], got {crop_pct}")
        if store_size < size:
            raise ConfigError(f"data.store_size={store_size} must be >= data.size={size} (the crop is taken from it)")
        if not 0.0 < min_scale <= 1.0:
            raise ConfigError(f"data.min_scale must be in (0, 1], got {min_scale}")
        if holdout_per_class < 1:
            raise ConfigError(f"data.holdout_per_class must be >= 1 (early stopping needs a hold-out), got {holdout_per_class}")
        if num_classes < 1:
            raise ConfigError(f"data.num_classes must be >= 1, got {num_classes}")
        self.save_hyperparameters()
        self.root, self.num_classes, self.size, self.crop_pct = root, num_classes, size, crop_pct
        self.store_size, self.min_scale, self.holdout_per_class = store_size, min_scale, holdout_per_class
        self.seed, self.download = seed, download
        self.class_names: list[str] = []
        self.class_words: list[str] = []

    def prepare_data(self) -> None:
        """Download the official archive when ``download`` is set and ``root`` holds no copy (rank 0 only)."""
        if self.download and locate_imagenette(self.root) is None:
            dest = Path(self.root).expanduser()
            dest = dest if dest.name.lower().endswith(_ARCHIVE_SUFFIXES) else dest / IMAGENETTE_FILENAME
            download_and_verify(IMAGENETTE_URL, dest, IMAGENETTE_MD5)

    def setup(self, stage: str | None = None) -> None:
        """Read the source once and decode all three sets; later calls reuse them."""
        if self.train_set is not None and self.test_set is not None:
            return
        path = locate_imagenette(self.root)
        if path is None:
            raise DataError(
                f"Imagenette not found at {self.root!r}: no zip, no .tgz and no folder with train/ and val/. Point "
                "data.root at imagenette-160.zip, imagenette2-160.tgz or imagenette2-320.tgz, at its extracted "
                f"folder or at the folder holding it, or set data.download=true to fetch {IMAGENETTE_URL}."
            )
        files, word_lines = read_imagenette_files(path)
        wnids = sorted({wnid for split, wnid, _ in files if split == "train"})
        if len(wnids) != self.num_classes:
            raise DataError(f"{path} has {len(wnids)} classes in train/, but data.num_classes={self.num_classes}; "
                            f"set data.num_classes={len(wnids)}")  # fmt: skip
        unknown = sorted({wnid for split, wnid, _ in files if split == "val"} - set(wnids))
        if unknown:
            raise DataError(f"{path}: val/ has classes {unknown} that train/ lacks; {_LAYOUT}")
        words = dict(IMAGENETTE_WORDS)
        for line in word_lines:
            wnid, _, text = line.partition("\t")
            if text.strip():
                words[wnid.strip()] = text.split(",")[0].strip()
        self.class_names, self.class_words = wnids, [words.get(w, w) for w in wnids]
        label_of = {w: k for k, w in enumerate(wnids)}

        def split_of(name: str) -> tuple[list[str], np.ndarray]:
            keys = sorted(k for k in files if k[0] == name)
            return [k[2] for k in keys], np.array([label_of[k[1]] for k in keys], np.int64)

        data = {key[2]: blob for key, blob in files.items()}
        train_names, train_labels = split_of("train")
        test_names, test_labels = split_of("val")
        if len(test_names) == 0:
            raise DataError(f"{path} has no images in val/ (the test split); {_LAYOUT}")
        train_idx, holdout_idx = stratified_split(train_labels, self.holdout_per_class, self.seed)
        where = str(path)
        train = self._decode(data, [train_names[k] for k in train_idx], self.store_size, 1.0, where, "train")
        holdout = self._decode(data, [train_names[k] for k in holdout_idx], self.size, self.crop_pct, where, "hold-out")
        test = self._decode(data, test_names, self.size, self.crop_pct, where, "val")
        augment = self.make_train_transform(size=self.size, min_scale=self.min_scale)
        self.train_set = ArrayImageDataset(train, train_labels[train_idx], transform=augment,
                                           names=[train_names[k] for k in train_idx])  # fmt: skip
        self.holdout_set = ArrayImageDataset(holdout, train_labels[holdout_idx], names=[train_names[k] for k in holdout_idx])
        self.test_set = ArrayImageDataset(test, test_labels, names=test_names)

    @property
    def preprocessing(self) -> dict:
        """What an export of a model trained here records: ``size`` input, timm's ``crop_pct`` evaluation crop."""
        return preprocessing_config(self.size, self.size, self.crop_pct)

    @staticmethod
    def _decode(data: dict[str, bytes], names: list[str], side: int, crop_pct: float, where: str, split: str) -> np.ndarray:
        images = np.empty((len(names), side, side, 3), np.uint8)
        for k, name in enumerate(progress(names, f"decoding imagenette {split}")):
            images[k] = decode_rgb(data[name], f"{where}:{name}", size=(side, side), crop=True, crop_pct=crop_pct)
        return images
