"""Dataset trees read without Lightning: Tiny ImageNet (zip or folder) and class-per-folder trees.

The datamodules and ``taskcodec pack`` share these readers, so a packed dataset holds exactly the
images and labels training would see.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from taskcodec.errors import DataError

_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
_LAYOUT_HINT = "expected the official Tiny ImageNet layout (wnids.txt, train/<wnid>/images/, val/images/)"


def _numeric_key(filename: str) -> tuple[int, str]:
    """Sort ``n01443537_10.JPEG`` after ``n01443537_9.JPEG``."""
    match = re.search(r"_(\d+)\.[^.]+$", filename)
    return (int(match.group(1)) if match else -1, filename)


class _TinyImageNetTree:
    """Read-only files of one Tiny ImageNet top folder, inside a zip or on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_dir():
            return
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as err:
            raise DataError(f"{path} is not a readable zip file ({err}); {_LAYOUT_HINT}") from err
        names = [n for n in self._zip.namelist() if not n.endswith("/")]
        tops = sorted({n[: -len("wnids.txt")] for n in names if re.fullmatch(r"([^/]+/)?wnids\.txt", n)})
        if len(tops) != 1:
            found = "none" if not tops else ", ".join(t + "wnids.txt" for t in tops)
            self._zip.close()
            raise DataError(f"{path} must hold exactly one */wnids.txt (found {found}); {_LAYOUT_HINT}")
        self._prefix = tops[0]
        self._folders: dict[str, list[str]] = {}
        for name in names:
            if name.startswith(self._prefix):
                folder, _, base = name[len(self._prefix) :].rpartition("/")
                self._folders.setdefault(folder, []).append(base)

    def where(self, rel: str) -> str:
        return f"{self.path}:{self._prefix}{rel}" if self._zip else str(self.path / rel)

    def exists(self, rel: str) -> bool:
        if self._zip is None:
            return (self.path / rel).is_file()
        folder, _, base = rel.rpartition("/")
        return base in self._folders.get(folder, ())

    def read(self, rel: str) -> bytes:
        if not self.exists(rel):
            raise DataError(f"{self.where(rel)} is missing; {_LAYOUT_HINT}")
        if self._zip is None:
            return (self.path / rel).read_bytes()
        return self._zip.read(self._prefix + rel)

    def text_lines(self, rel: str) -> list[str]:
        return [
            line.strip() for line in self.read(rel).decode("utf-8", "replace").splitlines() if line.strip()
        ]

    def list_files(self, rel: str) -> list[str]:
        if self._zip is None:
            folder = self.path / rel
            return [p.name for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
        return list(self._folders.get(rel, []))

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def locate_tiny_imagenet(root: str | Path) -> Path | None:
    """Return the zip or top folder that ``root`` points at, or None when nothing is there.

    ``root`` may be a zip, the top folder (holding wnids.txt), or a folder holding exactly one
    such folder or one ``tiny-imagenet*.zip``.
    """
    root = Path(root).expanduser()
    if root.is_file() or (root / "wnids.txt").is_file():
        return root
    if not root.is_dir():
        return None
    found = sorted(p for p in root.iterdir() if (p / "wnids.txt").is_file())
    found = found or sorted(p for p in root.glob("tiny-imagenet*.zip") if p.is_file())
    if len(found) > 1:
        raise DataError(
            f"{root} holds several Tiny ImageNet copies ({', '.join(p.name for p in found)}); "
            "point data.root at the one to use"
        )
    return found[0] if found else None


class LabelledImages:
    """An ordered list of labelled images of one split, read lazily: what ``taskcodec pack`` packs.

    ``names[i]`` is a stable key (the path inside the dataset), ``labels[i]`` its class index into
    ``class_names`` (``class_words`` are human-readable names, the same as ``class_names`` when the
    dataset has none). The order is deterministic, so a resumed pack sees the same list.
    """

    def __init__(self, names: list[str], labels: list[int], class_names: list[str], class_words: list[str], read) -> None:
        self.names, self.labels = names, labels
        self.class_names, self.class_words = class_names, class_words
        self._read = read

    def __len__(self) -> int:
        return len(self.names)

    def read(self, i: int) -> bytes:
        """The encoded bytes of image ``i``."""
        return self._read(self.names[i])


def tiny_imagenet_split(
    root: str | Path, split: str = "train", num_classes: int | None = None, first_class: int = 0
) -> LabelledImages:
    """Tiny ImageNet's ``train`` or ``val`` split (the official layout, in a zip or a folder).

    Classes are ``num_classes`` wnids of ``wnids.txt`` from ``first_class`` on (all the rest when
    ``num_classes`` is None), relabelled 0..K-1.
    """
    if split not in ("train", "val"):
        raise DataError(f"Tiny ImageNet split must be 'train' or 'val', got {split!r}")
    if first_class < 0 or (num_classes is not None and num_classes < 1):
        raise DataError(f"need first_class >= 0 and num_classes >= 1, got {first_class} and {num_classes}")
    path = locate_tiny_imagenet(root)
    if path is None:
        raise DataError(f"no Tiny ImageNet zip or folder at {root}; {_LAYOUT_HINT}")
    tree = _TinyImageNetTree(path)
    wnids = tree.text_lines("wnids.txt")[first_class : None if num_classes is None else first_class + num_classes]
    label_of = {w: k for k, w in enumerate(wnids)}
    words = {}
    if tree.exists("words.txt"):
        for line in tree.text_lines("words.txt"):
            wnid, _, text = line.partition("\t")
            words[wnid] = text.split(",")[0].strip()
    names, labels = [], []
    if split == "train":
        for label, wnid in enumerate(wnids):
            folder = f"train/{wnid}/images"
            files = sorted((n for n in tree.list_files(folder) if n.lower().endswith(_IMAGE_SUFFIXES)), key=_numeric_key)
            names += [f"{folder}/{n}" for n in files]
            labels += [label] * len(files)
    else:
        rows = [line.split() for line in tree.text_lines("val/val_annotations.txt")]
        for fields in sorted(rows, key=lambda f: _numeric_key(f[0])):
            if len(fields) >= 2 and fields[1] in label_of:
                names.append(f"val/images/{fields[0]}")
                labels.append(label_of[fields[1]])
    if not names:
        raise DataError(
            f"{tree.where(split)} holds no images of classes {first_class}..{first_class + len(wnids) - 1}; {_LAYOUT_HINT}"
        )
    return LabelledImages(names, labels, wnids, [words.get(w, w) for w in wnids], tree.read)


def image_folder_split(root: str | Path, extensions: tuple[str, ...]) -> LabelledImages:
    """A class-per-folder tree ``root/<class>/**/<image>``: classes are the sorted folder names."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder; expected root/<class>/<image>")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names, labels = [], []
    for label, cls in enumerate(classes):
        files = sorted(
            p for p in (root / cls).rglob("*")
            if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith(".")
        )  # fmt: skip
        names += [p.relative_to(root).as_posix() for p in files]
        labels += [label] * len(files)
    if not names:
        raise DataError(f"{root} holds no images in class subfolders ({', '.join(extensions)})")
    return LabelledImages(names, labels, classes, classes, lambda name: (root / name).read_bytes())
