"""Packed datasets (``taskcodec pack`` shards) served as decoded latents, to train the server side.

Each shard is read with WebDataset and its records are decoded by the decoder's entropy stage
alone (:func:`taskcodec.batching.decode_latents`): items are ``(y_hat [C, h, w], label)``, exactly
the latents a deployed decoder rebuilds from the bytes. Latents are small (a 64x64 image is a few
hundred symbols), so they are decoded once at ``setup()`` and held in memory like the other
datamodules' images.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
import webdataset as wds
from torch.utils.data import DataLoader, TensorDataset

from datamodules.arrays import stratified_split
from taskcodec.adapt import server_codec
from taskcodec.batching import decode_latents  # bounds claimed sizes itself
from taskcodec.bitstream import unpack_record
from taskcodec.container import read_container
from taskcodec.errors import ConfigError, DataError
from taskcodec.export import SOURCE_KEY
from taskcodec.pack import read_manifest, shard_paths

DECODE_BATCH = 512


def read_packed_latents(folder: str | Path, decoder: str | Path | dict) -> tuple[TensorDataset, dict]:
    """All ``(y_hat, label)`` of a complete pack folder, checked against the model id of an export.

    ``decoder`` may be the decoder or the encoder file (both hold the entropy stage), or an export
    already read with :func:`taskcodec.export.read_export`.
    """
    plan = read_manifest(folder)
    codec, meta = server_codec(decoder)  # the export's entropy stage on a decoder side
    decoder_path = decoder.get(SOURCE_KEY, "the export") if isinstance(decoder, dict) else decoder
    codec.eval()
    if plan["codec_id"] != meta["codec_id"]:
        raise DataError(
            f"{folder} was packed with model {plan['codec_id']}, but {decoder_path} is model {meta['codec_id']}; "
            f"use decoder-{plan['codec_id']}.pt"
        )
    urls = [str(p) for p in shard_paths(folder)]
    latents, labels, sizes = [], [], set()
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        container = read_container(sample["tca"], f"{sample['__url__']}:{sample['__key__']}.tca")
        container.check_codec(meta["codec_id"], sample["__url__"])
        if any(e.label is None for e in container.entries):
            raise DataError(f"{sample['__url__']} has unlabelled records; it is not a pack of a labelled dataset")
        records = [e.record for e in container.entries]
        sizes |= {unpack_record(r)[:2] for r in records}
        for start in range(0, len(records), DECODE_BATCH):
            latents.append(decode_latents(codec, records[start : start + DECODE_BATCH]))
        labels += [e.label for e in container.entries]
    expected = plan["count"] - len(plan.get("skipped", []))  # unreadable images the pack left out
    if len(labels) != expected:
        raise DataError(f"{folder}: the manifest lists {expected} packed images, the shards hold {len(labels)}")
    plan["image_sizes"] = sorted(sizes)  # (height, width) of the records: not in the latents themselves
    return TensorDataset(torch.cat(latents), torch.tensor(labels, dtype=torch.int64)), plan


class PackedLatentDataModule(pl.LightningDataModule):
    """Train/val/test loaders of ``(y_hat, label)`` from pack folders made with the same model.

    ``train`` is required; ``val`` and ``test`` are optional pack folders (``test`` defaults to
    ``val``). Without a ``val`` folder, ``holdout_per_class`` > 0 holds a seeded, stratified sample
    of each class out of ``train`` as ``val`` (and ``test``, unless a test folder is given).
    ``num_classes`` and ``latent_shape`` are known after ``setup()``.

    ``teacher_logits`` [N, K], one row per image of the ``train`` pack in its order: the items of
    ``train`` (and of the hold-out taken from it) become ``(y_hat, label, teacher_logits)``, what the
    server distils from (``taskcodec adapt --teacher``).
    """

    def __init__(
        self,
        train: str,
        decoder: str | dict,
        val: str | None = None,
        test: str | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = False,
        holdout_per_class: int = 0,
        seed: int = 0,
        teacher_logits: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if holdout_per_class < 0 or (holdout_per_class and val is not None):
            raise ConfigError(
                f"holdout_per_class={holdout_per_class}: must be >= 0, and 0 when a val pack folder is given"
            )
        self.holdout_per_class, self.seed = holdout_per_class, seed
        # an export passed in already read (taskcodec adapt) is not a hyperparameter: its path is
        self.save_hyperparameters(ignore=["teacher_logits"] + ([] if isinstance(decoder, str) else ["decoder"]))
        self.teacher_logits = teacher_logits
        self.folders = {"train": train, "val": val, "test": test or val}
        self.decoder = decoder
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.sets: dict[str, TensorDataset] = {}
        self.class_names: list[str] = []
        self.class_words: list[str] = []
        self.num_classes: int | None = None
        self.latent_shape: tuple[int, ...] | None = None
        self.image_size: tuple[int, int] | None = None
        self._image_sizes: set[tuple[int, int]] = set()

    def setup(self, stage: str | None = None) -> None:
        """Decode every pack folder once; later calls reuse them."""
        for split, folder in self.folders.items():
            if folder is None or split in self.sets:
                continue
            dataset, plan = read_packed_latents(folder, self.decoder)
            if self.class_names and plan["class_names"] != self.class_names:
                raise DataError(f"{folder} has other classes than {self.folders['train']}; pack the same classes")
            self.class_names, self.class_words = plan["class_names"], plan["class_words"]
            self.num_classes = len(self.class_names)
            self.latent_shape = tuple(dataset.tensors[0].shape[1:])
            self._image_sizes |= set(plan["image_sizes"])
            self.image_size = next(iter(self._image_sizes)) if len(self._image_sizes) == 1 else None
            if split == "train" and self.teacher_logits is not None:
                if len(self.teacher_logits) != len(dataset) or self.teacher_logits.shape[1] != self.num_classes:
                    raise DataError(
                        f"teacher logits of shape {tuple(self.teacher_logits.shape)} for {len(dataset)} packed images "
                        f"of {self.num_classes} classes in {folder}: the teacher must be a {self.num_classes}-class "
                        "classifier, run on the same images"
                    )
                dataset = TensorDataset(*dataset.tensors, self.teacher_logits.float())
            self.sets[split] = dataset
            if split == "train" and self.holdout_per_class:
                keep, held = stratified_split(dataset.tensors[1].numpy(), self.holdout_per_class, self.seed)
                self.sets["train"] = TensorDataset(*(t[keep] for t in dataset.tensors))
                self.sets["val"] = TensorDataset(*(t[held] for t in dataset.tensors))
                if self.folders["test"] is None:
                    self.sets["test"] = self.sets["val"]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        if split not in self.sets:
            raise ConfigError(f"no {split} pack folder configured (data.{split})")
        return DataLoader(self.sets[split], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, pin_memory=self.pin_memory)  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
