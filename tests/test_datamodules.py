"""Datamodules on the Tiny ImageNet sample in tests/data (as folder and as zip) and on small generated trees."""

from __future__ import annotations

import hashlib
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import datamodules.tiny_imagenet as tiny_module
from datamodules import (
    ArrayImageDataset,
    CIFARDataModule,
    ImageFolderDataModule,
    TinyImageNetDataModule,
    decode_rgb,
    download_and_verify,
    stratified_split,
)
from taskcodec.errors import ConfigError, DataError

SAMPLE = Path(__file__).parent / "data" / "tiny-imagenet-sample"
WNIDS = ["n01443537", "n01641577", "n01698640"]
GRAY = "train/n01698640/images/n01698640_91.JPEG"  # a grayscale ('L') JPEG in the original data
REAL_ZIP = Path(__file__).resolve().parents[2] / "shared/data/tiny-imagenet-100.zip"


def tiny(root: Path | str, **kwargs) -> TinyImageNetDataModule:
    args = {"num_classes": 3, "holdout_per_class": 2, "batch_size": 4, "num_workers": 0, **kwargs}
    dm = TinyImageNetDataModule(str(root), **args)
    dm.setup()
    return dm


def zip_tree(folder: Path, dest: Path, replace: dict[str, bytes] | None = None, skip: str = "") -> Path:
    """Zip ``folder`` keeping it as the top folder, optionally replacing or leaving out members."""
    replace = replace or {}
    with zipfile.ZipFile(dest, "w") as archive:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder).as_posix()
            if path.is_file() and rel != skip:
                archive.writestr(f"{folder.name}/{rel}", replace.get(rel, path.read_bytes()))
    return dest


def copy_sample(tmp_path: Path) -> Path:
    return Path(shutil.copytree(SAMPLE, tmp_path / "tiny-imagenet-copy"))


def raw(dataset: ArrayImageDataset, i: int) -> torch.Tensor:
    return torch.from_numpy(dataset.images[i]).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="module")
def sample_zip(tmp_path_factory) -> Path:
    return zip_tree(SAMPLE, tmp_path_factory.mktemp("zip") / "tiny-imagenet-sample.zip")


@pytest.fixture(scope="module")
def folder_dm() -> TinyImageNetDataModule:
    return tiny(SAMPLE, return_boxes=True)


def official_200_style_zip(dest: Path) -> Path:
    """The sample zipped like tiny-imagenet-200.zip: its own top-folder name, folder entries, a test/ split."""
    with zipfile.ZipFile(dest, "w") as archive:
        archive.writestr("tiny-imagenet-200/", b"")
        for path in sorted(SAMPLE.rglob("*")):
            rel = path.relative_to(SAMPLE).as_posix()
            if path.is_dir():
                archive.writestr(f"tiny-imagenet-200/{rel}/", b"")
            else:
                archive.write(path, f"tiny-imagenet-200/{rel}")
        archive.write(SAMPLE / "val/images/val_68.JPEG", "tiny-imagenet-200/test/images/test_0.JPEG")
        archive.writestr("__MACOSX/tiny-imagenet-200/._wnids.txt", b"junk")
    return dest


def test_zip_folder_and_parent_folder_give_identical_data(folder_dm, sample_zip, tmp_path):
    official = official_200_style_zip(tmp_path / "tiny-imagenet-200.zip")
    roots = (sample_zip, SAMPLE.parent, official, tmp_path)  # tmp_path: a folder holding the zip
    for other in (tiny(root, return_boxes=True) for root in roots):
        assert other.class_names == folder_dm.class_names == WNIDS
        for split in ("train_set", "holdout_set", "test_set"):
            a, b = getattr(folder_dm, split), getattr(other, split)
            assert a.names == b.names
            np.testing.assert_array_equal(a.images, b.images)
            np.testing.assert_array_equal(a.labels, b.labels)
            np.testing.assert_array_equal(a.boxes, b.boxes)
    assert folder_dm.class_words == ["goldfish", "bullfrog", "American alligator"]
    assert (len(folder_dm.train_set), len(folder_dm.holdout_set), len(folder_dm.test_set)) == (12, 6, 6)


def test_items_are_rgb_floats_with_labels_and_boxes(folder_dm):
    for dataset in (folder_dm.holdout_set, folder_dm.test_set):
        for i in range(len(dataset)):
            image, label, box = dataset[i]
            assert image.shape == (3, 64, 64) and image.dtype == torch.float32
            assert 0.0 <= image.min() and image.max() <= 1.0
            assert 0 <= label < 3 and label == dataset.labels[i]
            assert box.shape == (4,) and torch.equal(box, torch.from_numpy(dataset.boxes[i]))
    # the test set's first row is val_68.JPEG, labelled n01443537 with box 10 19 63 42
    assert folder_dm.test_set.names[0] == "val/images/val_68.JPEG"
    assert folder_dm.test_set.labels[0] == 0 and folder_dm.test_set.boxes[0].tolist() == [10, 19, 63, 42]
    image, label = tiny(SAMPLE, augment=False).test_set[0]  # no boxes unless asked for
    assert image.shape == (3, 64, 64)


def test_grayscale_image_comes_out_rgb(folder_dm):
    assert Image.open(SAMPLE / GRAY).mode == "L"
    dataset = folder_dm.holdout_set if GRAY in folder_dm.holdout_set.names else folder_dm.train_set
    image = raw(dataset, dataset.names.index(GRAY))
    assert image.shape == (3, 64, 64)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert image.std() > 0.05  # a real picture, not a blank


def test_holdout_split_is_stratified_disjoint_and_seeded(folder_dm):
    train, holdout = folder_dm.train_set, folder_dm.holdout_set
    assert np.bincount(holdout.labels).tolist() == [2, 2, 2]
    assert np.bincount(train.labels).tolist() == [4, 4, 4]
    assert not set(train.names) & set(holdout.names)
    assert len(set(train.names) | set(holdout.names)) == 18
    again, other = tiny(SAMPLE), tiny(SAMPLE, seed=1)
    assert again.holdout_set.names == holdout.names
    assert other.holdout_set.names != holdout.names
    assert again.test_set.names == other.test_set.names == folder_dm.test_set.names


def test_stratified_split_counts_per_class():
    labels = np.array([0] * 10 + [1] * 4 + [2] * 6)
    train, holdout = stratified_split(labels, [3, 1, 2], seed=5)
    assert np.bincount(labels[holdout]).tolist() == [3, 1, 2]
    assert sorted(np.concatenate([train, holdout]).tolist()) == list(range(20))
    with pytest.raises(DataError, match="fewer than"):
        stratified_split(labels, 5, seed=0)


def test_train_per_class_takes_first_files_by_number():
    dm = tiny(SAMPLE, train_per_class=5, holdout_per_class=1)
    names = set(dm.train_set.names) | set(dm.holdout_set.names)
    assert len(names) == 15 and np.bincount(dm.holdout_set.labels).tolist() == [1, 1, 1]
    # numeric order: _9 comes before _10, so _10 and _91 are the ones dropped
    assert "train/n01641577/images/n01641577_9.JPEG" in names
    assert "train/n01641577/images/n01641577_10.JPEG" not in names
    assert GRAY not in names
    everything = tiny(SAMPLE, holdout_per_class=0)
    assert len(everything.train_set) == 18 and len(everything.holdout_set) == 0


def test_augmentation_changes_train_images_only():
    dm = tiny(SAMPLE)
    changed = 0
    for seed in range(5):
        torch.manual_seed(seed)
        image, _ = dm.train_set[0]
        assert image.shape == (3, 64, 64)
        changed += not torch.equal(image, raw(dm.train_set, 0))
    assert changed > 0
    for dataset in (dm.holdout_set, dm.test_set):
        for i in range(len(dataset)):
            assert torch.equal(dataset[i][0], raw(dataset, i))
    plain = tiny(SAMPLE, augment=False)
    assert torch.equal(plain.train_set[0][0], raw(plain.train_set, 0))


def test_num_classes_takes_first_wnids_in_file_order(tmp_path):
    root = copy_sample(tmp_path)
    (root / "wnids.txt").write_text("\n".join(reversed(WNIDS)) + "\n")
    dm = tiny(root, num_classes=2)
    assert dm.class_names == [WNIDS[2], WNIDS[1]] and dm.num_classes == 2
    for dataset in (dm.train_set, dm.holdout_set, dm.test_set):
        assert set(dataset.labels.tolist()) == {0, 1}
        for name, label in zip(dataset.names, dataset.labels, strict=True):
            if name.startswith("train/"):
                assert name.split("/")[1] == dm.class_names[label]
    assert len(dm.test_set) == 4


def test_setup_is_idempotent_and_test_stage_decodes_only_the_test_set():
    dm = TinyImageNetDataModule(str(SAMPLE), num_classes=3, holdout_per_class=2, num_workers=0, batch_size=5)
    dm.setup("test")
    assert dm.train_set is None and len(dm.test_set) == 6
    test_set = dm.test_set
    dm.setup("fit")
    train_set = dm.train_set
    dm.setup("fit")
    dm.setup("test")
    assert dm.test_set is test_set and dm.train_set is train_set and len(train_set) == 12
    fit_first = TinyImageNetDataModule(str(SAMPLE), num_classes=3, holdout_per_class=2, num_workers=0)
    fit_first.setup("fit")  # evaluate.py relies on "fit" building the test set too
    assert len(fit_first.test_set) == 6 and fit_first.test_set.names == test_set.names
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (5, 3, 64, 64) and labels.dtype == torch.int64
    assert sum(len(b[1]) for b in dm.val_dataloader()) == 6
    assert sum(len(b[1]) for b in dm.test_dataloader()) == 6


def test_missing_root_says_where_and_what_to_do(tmp_path):
    missing = tmp_path / "nowhere" / "tiny-imagenet-200.zip"
    with pytest.raises(DataError, match="nowhere") as info:
        tiny(missing)
    assert "data.download=true" in str(info.value)
    with pytest.raises(DataError, match="not found"):
        tiny(tmp_path)  # an existing folder with nothing in it


@pytest.mark.parametrize(
    "garbage", [b"this is not a jpeg", (SAMPLE / "val/images/val_77.JPEG").read_bytes()[:600]]
)
def test_corrupt_image_in_zip_is_named(tmp_path, garbage):
    bad = "val/images/val_77.JPEG"
    archive = zip_tree(SAMPLE, tmp_path / "bad.zip", replace={bad: garbage})
    with pytest.raises(DataError, match="val_77.JPEG"):
        tiny(archive)


def test_malformed_layouts_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="wnids.txt"):
        tiny(zip_tree(SAMPLE, tmp_path / "no-wnids.zip", skip="wnids.txt"))
    root = copy_sample(tmp_path)
    (root / "wnids.txt").unlink()
    with pytest.raises(DataError, match="not found"):
        tiny(root)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\nn99999999\n")
    with pytest.raises(DataError, match="n99999999"):
        tiny(root, num_classes=4)
    with pytest.raises(ConfigError, match="lists only 4"):
        tiny(root, num_classes=5)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    annotations = root / "val/val_annotations.txt"
    annotations.write_text(annotations.read_text() + "val_9999.JPEG\tn01443537\t0\t0\t5\t5\n")
    with pytest.raises(DataError, match="val_9999.JPEG"):
        tiny(root)
    annotations.write_text("val_68.JPEG\tn01443537\t0\t0\n")
    with pytest.raises(DataError, match="line 1"):
        tiny(root)
    boxes = root / f"train/{WNIDS[0]}/{WNIDS[0]}_boxes.txt"
    boxes.write_text(boxes.read_text().replace("\t63\t58", "\tsixty\t58"))
    with pytest.raises(DataError, match="_boxes.txt line 1"):
        tiny(root)


def test_bad_config_values():
    with pytest.raises(ConfigError, match="num_classes"):
        TinyImageNetDataModule(str(SAMPLE), num_classes=0)
    with pytest.raises(ConfigError, match="holdout_per_class"):
        TinyImageNetDataModule(str(SAMPLE), holdout_per_class=-1)
    with pytest.raises(ConfigError, match="batch_size"):
        TinyImageNetDataModule(str(SAMPLE), batch_size=0)
    with pytest.raises(DataError, match="fewer than asked"):
        tiny(SAMPLE, holdout_per_class=6)
    with pytest.raises(DataError, match="fewer than asked"):
        tiny(SAMPLE, train_per_class=7)


def test_download_and_verify_renames_only_good_files(tmp_path, sample_zip):
    url = sample_zip.as_uri()
    md5 = hashlib.md5(sample_zip.read_bytes()).hexdigest()
    dest = tmp_path / "got" / "tiny.zip"
    assert download_and_verify(url, dest, md5) == dest
    assert dest.read_bytes() == sample_zip.read_bytes()
    assert not dest.with_name("tiny.zip.part").exists()

    bad = tmp_path / "bad.zip"
    with pytest.raises(DataError, match="MD5") as info:
        download_and_verify(url, bad, "0" * 32)
    assert url in str(info.value) and str(bad) in str(info.value)
    with pytest.raises(DataError, match="could not download"):
        download_and_verify((tmp_path / "absent.zip").as_uri(), bad, md5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["got"]


def test_prepare_data_downloads_into_a_missing_folder(tmp_path, sample_zip, monkeypatch):
    monkeypatch.setattr(tiny_module, "TINY_IMAGENET_URL", sample_zip.as_uri())
    monkeypatch.setattr(tiny_module, "TINY_IMAGENET_MD5", hashlib.md5(sample_zip.read_bytes()).hexdigest())
    root = tmp_path / "data"
    dm = TinyImageNetDataModule(str(root), num_classes=3, holdout_per_class=2, download=True, num_workers=0)
    dm.prepare_data()
    assert (root / "tiny-imagenet-200.zip").is_file()
    dm.setup()
    assert len(dm.test_set) == 6


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


@pytest.fixture
def image_tree(tmp_path) -> Path:
    """cat/dog tree: JPEGs from the sample plus a 50x37 PNG, an RGBA PNG, a P-mode PNG, 16-bit and grayscale."""
    root = tmp_path / "tree"
    photos = sorted((SAMPLE / "train").rglob("*.JPEG"))
    for k, photo in enumerate(photos[:5]):
        (root / "cat").mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, root / "cat" / f"cat{k}.jpg")
    picture = Image.open(photos[6]).convert("RGB")
    _save(picture.resize((50, 37)), root / "dog" / "odd.PNG")
    _save(picture.convert("RGBA"), root / "dog" / "alpha.png")
    _save(picture.convert("P"), root / "dog" / "nested" / "palette.png")
    _save(Image.fromarray(np.full((40, 30), 65535, np.uint16)), root / "dog" / "deep.tiff")
    shutil.copy(SAMPLE / GRAY, root / "dog" / "GRAY.JPEG")
    (root / "dog" / "notes.txt").write_text("not an image, ignored")
    return root


@pytest.mark.parametrize("resize", ["resize_crop", "resize"])
def test_image_folder_resizes_every_image(image_tree, resize):
    dm = ImageFolderDataModule(
        str(image_tree), image_size=32, resize=resize, holdout_fraction=0.2, num_workers=0
    )
    dm.setup()
    assert dm.class_names == ["cat", "dog"] and dm.num_classes == 2
    assert len(dm.train_set) + len(dm.holdout_set) == 10
    assert np.bincount(dm.holdout_set.labels).tolist() == [1, 1]
    assert dm.test_set is dm.holdout_set
    for dataset in (dm.train_set, dm.holdout_set):
        for i in range(len(dataset)):
            image, label = dataset[i]
            assert image.shape == (3, 32, 32)
            assert label == (Path(dataset.names[i]).relative_to(image_tree).parts[0] == "dog")
    everything = np.concatenate([dm.train_set.images, dm.holdout_set.images])
    names = dm.train_set.names + dm.holdout_set.names
    assert (everything[names.index(str(image_tree / "dog" / "deep.tiff"))] == 255).all()


def test_image_folder_test_root_and_errors(image_tree, tmp_path):
    test_root = tmp_path / "test"
    shutil.copytree(image_tree / "dog", test_root / "dog")
    dm = ImageFolderDataModule(str(image_tree), image_size=16, test_root=str(test_root), num_workers=0)
    dm.setup()
    assert len(dm.test_set) == 5 and set(dm.test_set.labels.tolist()) == {1}
    with pytest.raises(DataError, match="set data.num_classes=2"):
        ImageFolderDataModule(str(image_tree), num_classes=3, num_workers=0).setup()

    (image_tree / "dog" / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(DataError, match="broken.jpg"):
        ImageFolderDataModule(str(image_tree), num_workers=0).setup()
    (image_tree / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        ImageFolderDataModule(str(image_tree), num_workers=0).setup()
    (tmp_path / "bare").mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        ImageFolderDataModule(str(tmp_path / "bare"), num_workers=0).setup()
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderDataModule(str(tmp_path / "absent"), num_workers=0).setup()
    with pytest.raises(ConfigError, match="resize"):
        ImageFolderDataModule(str(image_tree), resize="squash")


def test_decode_rgb_handles_modes_and_names_bad_files():
    def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        return buffer.getvalue()

    gray = Image.fromarray(np.full((4, 6), 77, np.uint8))
    assert (decode_rgb(encode(gray), "g") == 77).all() and decode_rgb(encode(gray), "g").shape == (4, 6, 3)
    sixteen = Image.fromarray(np.array([[0, 65535]], np.uint16))
    assert decode_rgb(encode(sixteen), "s")[0, :, 0].tolist() == [0, 255]
    cmyk = decode_rgb(encode(Image.new("CMYK", (3, 3), (0, 0, 0, 0)), "JPEG"), "c")
    assert cmyk.shape == (3, 3, 3) and cmyk.min() > 250
    rgba = decode_rgb(encode(Image.new("RGBA", (8, 4), (10, 20, 30, 0))), "a", size=(2, 2))
    assert rgba.shape == (2, 2, 3) and rgba[0, 0].tolist() == [10, 20, 30]
    with pytest.raises(DataError, match="some/file.jpg"):
        decode_rgb(b"nope", "some/file.jpg")


def test_map_images_keeps_labels_and_checks_shape(folder_dm):
    dataset = folder_dm.test_set
    inverted = dataset.map_images(lambda image: 255 - image)
    np.testing.assert_array_equal(inverted.images, 255 - dataset.images)
    np.testing.assert_array_equal(inverted.labels, dataset.labels)
    assert inverted.names == dataset.names and len(inverted[0]) == 3
    with pytest.raises(ValueError, match="uint8"):
        dataset.map_images(lambda image: image[:10])


def test_cifar_missing_without_download(tmp_path):
    with pytest.raises(DataError, match="data.download=true"):
        CIFARDataModule(str(tmp_path), variant=100, num_workers=0).setup()
    with pytest.raises(ConfigError, match="variant"):
        CIFARDataModule(str(tmp_path), variant=20)


@pytest.mark.slow
@pytest.mark.skipif(not REAL_ZIP.is_file(), reason=f"{REAL_ZIP} not present")
def test_real_tiny_imagenet_100_zip():
    dm = TinyImageNetDataModule(str(REAL_ZIP), num_classes=10, num_workers=0)
    dm.setup()
    assert (len(dm.train_set), len(dm.holdout_set), len(dm.test_set)) == (4500, 500, 500)
    assert np.bincount(dm.holdout_set.labels).tolist() == [50] * 10
    assert np.bincount(dm.test_set.labels).tolist() == [50] * 10
    assert dm.train_set.images.shape == (4500, 64, 64, 3)
    assert dm.class_words[0] == "goldfish"


@pytest.mark.parametrize("name", ["tiny_imagenet", "image_folder", "cifar10", "cifar100", "imagenette"])
def test_data_configs_instantiate(name, tmp_path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    leaf = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / "data" / f"{name}.yaml")
    leaf = leaf.data if "data" in leaf else leaf  # a global data file (imagenette) also sets other keys
    cfg = OmegaConf.merge({"paths": {"data_dir": str(tmp_path)}}, {"data": leaf})
    if name == "image_folder":
        cfg.data.root, cfg.data.num_classes = str(tmp_path), 2
    dm = instantiate(cfg.data)
    assert dm.num_classes == cfg.data.num_classes and dm.batch_size == cfg.data.batch_size
    # the reference recipe's data options are one set that every datamodule takes
    assert (dm.augment, dm.augment_policy, dm.jpeg_augment) == (True, None, None)


def test_extra_classes_join_the_training_split_unlabelled():
    """data.extra_classes: the next classes' train images, labelled UNLABELED, in the training split only."""
    from taskcodec.losses import UNLABELED

    base = TinyImageNetDataModule(str(SAMPLE), num_classes=2, holdout_per_class=2, num_workers=0)
    base.setup("fit")
    dm = TinyImageNetDataModule(str(SAMPLE), num_classes=2, holdout_per_class=2, num_workers=0, extra_classes=1)
    dm.setup("fit")
    assert dm.class_names == base.class_names and len(dm.extra_class_names) == 1
    extra = [n for n, y in zip(dm.train_set.names, dm.train_set.labels, strict=True) if y == UNLABELED]
    assert extra and all(n.split("/")[1] == dm.extra_class_names[0] for n in extra)
    assert len(dm.train_set) == len(base.train_set) + len(extra)  # the labelled images are the same ones
    assert list(dm.holdout_set.names) == list(base.holdout_set.names) and (dm.holdout_set.labels >= 0).all()
    assert list(dm.test_set.names) == list(base.test_set.names)  # results are on the task's classes only
    with pytest.raises(ConfigError, match="extra_classes"):
        TinyImageNetDataModule(str(SAMPLE), num_classes=2, extra_classes=2, num_workers=0).setup("fit")
    with pytest.raises(ConfigError, match="extra_classes"):
        TinyImageNetDataModule(str(SAMPLE), extra_classes=-1)
