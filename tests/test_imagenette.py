"""Imagenette: the shared zip, the official .tgz and extracted folders through one config, timm's eval crop."""

from __future__ import annotations

import hashlib
import io
import math
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import datamodules.imagenette as imagenette
from datamodules.imagenette import ImagenetteDataModule
from taskcodec.errors import ConfigError, DataError
from taskcodec.io import read_rgb

ROOT = Path(__file__).resolve().parents[1]
SHARED_ZIP = ROOT.parent / "shared" / "data" / "imagenette-160.zip"
WNIDS = ["n01440764", "n02102040", "n03888257"]


def _jpeg(seed: int, size: tuple[int, int]) -> bytes:
    """A small photo-like JPEG: a smooth gradient with a seeded colour, so resizes are not trivial."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.integers(0, 255, 3)
    image = np.stack([(base[c] + 3 * xx + 2 * yy * (c + 1)) % 256 for c in range(3)], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _files(top: str, train_per_class: int = 6, val_per_class: int = 2) -> dict[str, bytes]:
    """An Imagenette-layout tree of non-square images (as the official archives keep the aspect)."""
    files = {}
    for c, wnid in enumerate(WNIDS):
        for k in range(train_per_class):
            files[f"{top}/train/{wnid}/{wnid}_{k}.JPEG"] = _jpeg(100 * c + k, (60 + 4 * k, 48))
        for k in range(val_per_class):
            files[f"{top}/val/{wnid}/ILSVRC2012_val_{c}{k}.JPEG"] = _jpeg(1000 + 100 * c + k, (48, 64))
    return files


def _write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _write_tgz(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _write_folder(path: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


def _dm(root, **kw) -> ImagenetteDataModule:
    args = dict(num_classes=3, size=32, crop_pct=0.875, store_size=40, holdout_per_class=2, batch_size=4)
    args.update(kw)
    return ImagenetteDataModule(str(root), **args)


@pytest.fixture
def sources(tmp_path) -> dict[str, Path]:
    """The same images as the shared zip's layout, the official tgz, an extracted folder and a parent folder."""
    shared = _write_zip(tmp_path / "imagenette-160.zip", _files("imagenette-160"))
    official = _write_tgz(tmp_path / "imagenette2-160.tgz", _files("imagenette2-160"))
    folder = _write_folder(tmp_path / "extracted", _files("imagenette2-160")) / "imagenette2-160"
    parent = tmp_path / "parent"
    parent.mkdir()
    _write_tgz(parent / "imagenette2-320.tgz", _files("imagenette2-320"))
    return {"zip": shared, "tgz": official, "folder": folder, "parent": parent}


def test_zip_tgz_folder_and_parent_give_identical_data(sources):
    loaded = {}
    for kind, root in sources.items():
        dm = _dm(root)
        dm.setup()
        loaded[kind] = dm
    first = loaded["zip"]
    assert first.class_names == WNIDS and first.class_words == ["tench", "English springer", "parachute"]
    assert (len(first.train_set), len(first.holdout_set), len(first.test_set)) == (12, 6, 6)
    assert first.train_set.images.shape[1:] == (40, 40, 3)  # held at store_size for the random resized crop
    assert first.test_set.images.shape[1:] == first.holdout_set.images.shape[1:] == (32, 32, 3)
    for dm in loaded.values():
        for split in ("train_set", "holdout_set", "test_set"):
            assert np.array_equal(getattr(dm, split).images, getattr(first, split).images)
            assert np.array_equal(getattr(dm, split).labels, getattr(first, split).labels)
    assert np.bincount(first.holdout_set.labels).tolist() == [2, 2, 2]
    assert set(first.holdout_set.names).isdisjoint(first.train_set.names)  # the hold-out is carved from train
    assert all("/val/" in n for n in first.test_set.names)  # the official val split is the test split


def test_evaluation_crop_is_timms_crop_pct(sources):
    """Shorter side to floor(size / crop_pct) (bicubic), then the centre size x size: what the export records."""
    dm = _dm(sources["folder"])
    dm.setup()
    path = sources["folder"] / "val" / WNIDS[0] / "ILSVRC2012_val_00.JPEG"
    with Image.open(path) as im:
        w, h = im.size  # 48 x 64: width is the shorter side
        scaled = im.convert("RGB").resize((math.floor(32 / 0.875), round(h * math.floor(32 / 0.875) / w)),
                                          Image.Resampling.BICUBIC)  # fmt: skip
    left, top = (scaled.width - 32) // 2, (scaled.height - 32) // 2
    expected = np.asarray(scaled.crop((left, top, left + 32, top + 32)))
    k = next(i for i, n in enumerate(dm.test_set.names) if n.endswith("ILSVRC2012_val_00.JPEG"))
    assert np.array_equal(dm.test_set.images[k], expected)
    assert np.array_equal(read_rgb(path, size=(32, 32), crop_pct=0.875), expected)  # the deployed path agrees
    pre = dm.preprocessing
    assert pre["input_size"] == [3, 32, 32] and pre["crop_pct"] == 0.875


def test_training_views_are_random_resized_crops_at_size(sources):
    dm = _dm(sources["zip"], augment_policy="trivialaugment")
    dm.setup()
    torch.manual_seed(0)
    a, label = dm.train_set[0]
    b, _ = dm.train_set[0]
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32 and label == 0
    assert not torch.equal(a, b)  # a new view each time
    assert dm.test_set[0][0].shape == (3, 32, 32)
    off = _dm(sources["zip"], augment=False, store_size=32)
    off.setup()
    assert off.train_set.transform is None


def test_download_fetches_and_checks_the_official_archive(tmp_path, monkeypatch):
    archive = _write_tgz(tmp_path / "served.tgz", _files("imagenette2-160"))
    monkeypatch.setattr(imagenette, "IMAGENETTE_URL", archive.as_uri())
    monkeypatch.setattr(imagenette, "IMAGENETTE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    root = tmp_path / "data"
    dm = _dm(root, download=True)
    dm.prepare_data()
    assert (root / "imagenette2-160.tgz").read_bytes() == archive.read_bytes()
    dm.setup()
    assert len(dm.test_set) == 6
    monkeypatch.setattr(imagenette, "IMAGENETTE_MD5", "0" * 32)
    other = tmp_path / "other"
    with pytest.raises(DataError, match="MD5"):
        _dm(other, download=True).prepare_data()
    assert not any(other.rglob("*"))  # nothing half-written is left behind


def test_missing_corrupt_and_mismatched_sources_say_what_to_do(tmp_path, sources):
    with pytest.raises(DataError, match="data.download=true"):
        _dm(tmp_path / "absent").setup()
    truncated = tmp_path / "imagenette2-160.tgz.cut"
    data = sources["tgz"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        _dm(truncated).setup()
    with pytest.raises(DataError, match="data.num_classes=3"):
        _dm(sources["zip"], num_classes=10).setup()
    files = _files("x")
    files["x/val/n09999999/stray.JPEG"] = files["x/val/n01440764/ILSVRC2012_val_00.JPEG"]
    with pytest.raises(DataError, match="train/ lacks"):
        _dm(_write_zip(tmp_path / "stray.zip", files)).setup()
    files = _files("x")
    files["x/train/n01440764/broken.JPEG"] = b"not a jpeg"
    with pytest.raises(DataError, match="broken.JPEG"):
        _dm(_write_zip(tmp_path / "broken.zip", files)).setup()
    both = _files("a") | _files("b")
    with pytest.raises(DataError, match="top folders"):
        _dm(_write_zip(tmp_path / "two.zip", both)).setup()


@pytest.mark.parametrize("bad", [dict(size=8), dict(crop_pct=0.0), dict(crop_pct=1.5), dict(store_size=16),
                                 dict(min_scale=0.0), dict(holdout_per_class=0), dict(augment_policy="nope"),
                                 dict(jpeg_augment=[50, 10])])  # fmt: skip
def test_bad_config_values_fail_before_decoding(bad, tmp_path):
    with pytest.raises(ConfigError):
        _dm(tmp_path, **bad)


@pytest.mark.slow
def test_shared_imagenette_160_zip():
    dm = ImagenetteDataModule(str(SHARED_ZIP))
    dm.setup()
    assert (len(dm.train_set), len(dm.holdout_set), len(dm.test_set)) == (8969, 500, 3925)
    assert dm.train_set.images.shape[1:] == (160, 160, 3) and dm.test_set.images.shape[1:] == (128, 128, 3)
    assert dm.class_words[-1] == "parachute"


def test_study_scripts_pick_the_datamodule_of_their_dataset(sources):
    from datamodules import TinyImageNetDataModule, study_datamodule

    dm = study_datamodule("imagenette", str(sources["zip"]), 3, size=32, store_size=40, holdout_per_class=2)
    assert isinstance(dm, ImagenetteDataModule) and dm.num_classes == 3
    assert isinstance(study_datamodule("tiny_imagenet", "x.zip", 10), TinyImageNetDataModule)
    with pytest.raises(ConfigError, match="tiny_imagenet or imagenette"):
        study_datamodule("cifar7", "x", 10)
