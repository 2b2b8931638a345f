"""`taskcodec pack`: shards with labels, the packed datamodule, and resuming after SIGKILL."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_codec import CLASS_NAMES, SAMPLE, export_tiny

from datamodules.packed import PackedLatentDataModule
from taskcodec.cli import main
from taskcodec.datasets import image_folder_split, tiny_imagenet_split
from taskcodec.errors import DataError
from taskcodec.io import IMAGE_EXTENSIONS, load_image
from taskcodec.pack import read_manifest, read_shard, shard_paths


@pytest.fixture(scope="module")
def split_export(tmp_path_factory) -> dict:
    codec, enc, dec = export_tiny(tmp_path_factory.mktemp("pack"))
    return {"codec": codec, "encoder": str(enc), "decoder": str(dec)}


def _packed(folder: Path) -> list:
    return [e for path in shard_paths(folder) for e in read_shard(path).entries]


def test_pack_tiny_imagenet_and_serve_latents(split_export, tmp_path, capsys) -> None:
    out = tmp_path / "train"
    assert main(["pack", str(SAMPLE), "-m", split_export["encoder"], "-o", str(out), "--shard-size", "4", "-q"]) == 0
    listing = tiny_imagenet_split(SAMPLE, "train")
    entries = _packed(out)
    assert [(e.name, e.label) for e in entries] == list(zip(listing.names, listing.labels, strict=True))
    assert read_manifest(out)["class_names"] == CLASS_NAMES and len(shard_paths(out)) == 5
    assert main(["info", str(out)]) == 0 and "18 images" in capsys.readouterr().out

    dm = PackedLatentDataModule(str(out), split_export["decoder"], val=str(out), batch_size=5)
    dm.setup()
    y_hat, labels = dm.sets["train"].tensors
    images = torch.stack([load_image(listing.read(i)) for i in range(len(listing))])
    with torch.no_grad():
        expected = split_export["codec"](images)["y_hat"]
    assert torch.equal(y_hat, expected) and labels.tolist() == listing.labels
    assert dm.num_classes == 3 and next(iter(dm.val_dataloader()))[0].shape == (5, *dm.latent_shape)

    _, _, other_dec = export_tiny(tmp_path / "other", downsample=1)
    with pytest.raises(DataError, match="packed with model"):
        PackedLatentDataModule(str(out), str(other_dec)).setup()


def test_packed_config_instantiates(split_export, tmp_path) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    leaf = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / "data" / "packed.yaml")
    leaf.train, leaf.decoder = str(tmp_path), split_export["decoder"]
    dm = instantiate(leaf)
    assert isinstance(dm, PackedLatentDataModule) and dm.batch_size == 128
    with pytest.raises(DataError, match="not a pack folder"):
        dm.setup()


def _tree(root: Path, copies: int) -> Path:
    photos = sorted((SAMPLE / "train").rglob("*.JPEG"))
    for k in range(copies):
        for photo in photos:
            target = root / photo.parent.parent.name / f"{k}_{photo.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, target)
    return root


def test_pack_killed_at_a_random_point_resumes_without_loss_or_duplicates(split_export, tmp_path) -> None:
    tree = _tree(tmp_path / "tree", copies=8)  # 144 images, 48 shards of 3
    out = tmp_path / "packed"
    args = ["pack", str(tree), "-m", split_export["encoder"], "-o", str(out), "--shard-size", "3", "-q", "--threads", "1"]
    kill_after = random.Random(os.getpid()).randint(2, 30)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "taskcodec.cli", *args], env=env)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if len(list(out.glob("shard-*.tar"))) >= kill_after:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"pack finished before the kill (rc {proc.returncode})"
    assert not read_manifest(out)["complete"]
    with pytest.raises(DataError, match="incomplete"):
        shard_paths(out)
    assert main([*args[:-2], "--shard-size", "4"]) == 2  # resuming with other settings is refused
    assert main(args) == 0
    listing = image_folder_split(tree, IMAGE_EXTENSIONS)
    entries = _packed(out)
    names = [e.name for e in entries]
    assert len(names) == len(set(names)) == len(listing) == 144
    assert [(e.name, e.label) for e in entries] == list(zip(listing.names, listing.labels, strict=True))
    assert not list(out.glob("*.part"))


def test_pack_without_names_is_smaller_and_resume_checks_it(split_export, tmp_path) -> None:
    named, bare = tmp_path / "named", tmp_path / "bare"
    for out, extra in ((named, []), (bare, ["--no-names"])):
        assert main(["pack", str(SAMPLE), "-m", split_export["encoder"], "-o", str(out), "-q", *extra]) == 0
    assert all(e.name is None for e in _packed(bare)) and [e.label for e in _packed(bare)] == [e.label for e in _packed(named)]
    size = lambda d: sum(read_shard(p).total_bytes for p in shard_paths(d))  # noqa: E731  (tar pads to 10 KiB)
    assert size(bare) < size(named) - 18 * 10
    # resuming a nameless pack with names would mix the two: refused
    assert main(["pack", str(SAMPLE), "-m", split_export["encoder"], "-o", str(bare), "-q"]) == 2


def test_pack_and_adapt_keep_going_past_unreadable_images(tmp_path, capsys) -> None:
    """An unreadable image in a class folder: pack leaves it out (listed in the manifest, exit 2), the
    packed data still loads, and --strict stops at it."""
    import json
    import shutil

    from tiny_codec import SAMPLE, export_tiny

    from taskcodec.cli import main

    _, enc, _ = export_tiny(tmp_path / "m")
    root = tmp_path / "classes"
    for k, p in enumerate(sorted(SAMPLE.rglob("train/*/images/*.JPEG"))):
        d = root / p.parts[-3]
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, d / f"{k}.jpg")
    (root / "n01443537" / "zz-broken.jpg").write_bytes(b"\\xff\\xd8 broken")
    n_good = len(list(root.rglob("*.jpg"))) - 1
    assert main(["pack", str(root), "-m", str(enc), "-o", str(tmp_path / "p"), "-q", "--shard-size", "4"]) == 2
    err = capsys.readouterr().err
    assert "zz-broken.jpg" in err and f"{n_good} packed, 1 skipped" in err
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert manifest["complete"] and [s["name"] for s in manifest["skipped"]] == ["n01443537/zz-broken.jpg"]
    # resuming the finished pack still reports what it left out
    assert main(["pack", str(root), "-m", str(enc), "-o", str(tmp_path / "p"), "-q", "--shard-size", "4"]) == 2
    from datamodules.packed import PackedLatentDataModule

    data = PackedLatentDataModule(str(tmp_path / "p"), str(enc), batch_size=4, holdout_per_class=0)
    data.setup()
    assert len(data.sets["train"]) == n_good
    assert main(["pack", str(root), "-m", str(enc), "-o", str(tmp_path / "s"), "-q", "--strict"]) == 2
    assert "cannot read image" in capsys.readouterr().err
