"""LightningDataModules, one file per dataset family, all decoding into in-memory ArrayImageDatasets."""

from datamodules.arrays import (
    ArrayImageDataset,
    InMemoryDataModule,
    decode_rgb,
    download_and_verify,
    stratified_split,
    train_transform,
)
from datamodules.cifar import CIFARDataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.imagenette import IMAGENETTE_MD5, IMAGENETTE_URL, ImagenetteDataModule
from datamodules.tiny_imagenet import (
    TINY_IMAGENET_MD5,
    TINY_IMAGENET_URL,
    TinyImageNetDataModule,
)
from taskcodec.errors import ConfigError


def study_datamodule(dataset: str, root: str, num_classes: int = 10, **kwargs) -> InMemoryDataModule:
    """The datamodule of a study script's ``--dataset`` (``taskcodec.provenance.bench_parser``), decoding in-process.

    Tiny ImageNet takes the class options (``first_class``, ...); Imagenette has its 10 classes and its
    128-pixel evaluation crop, so a script reads its test images as the models trained on it saw them.
    """
    if dataset == "tiny_imagenet":
        return TinyImageNetDataModule(root=root, num_classes=num_classes, num_workers=0, **kwargs)
    if dataset == "imagenette":
        return ImagenetteDataModule(root=root, num_classes=num_classes, **kwargs)
    raise ConfigError(f"unknown dataset {dataset!r}; the study scripts read tiny_imagenet or imagenette")


__all__ = [
    "ArrayImageDataset",
    "CIFARDataModule",
    "IMAGENETTE_MD5",
    "IMAGENETTE_URL",
    "ImageFolderDataModule",
    "ImagenetteDataModule",
    "TINY_IMAGENET_MD5",
    "TINY_IMAGENET_URL",
    "TinyImageNetDataModule",
    "decode_rgb",
    "download_and_verify",
    "stratified_split",
    "study_datamodule",
    "train_transform",
]
