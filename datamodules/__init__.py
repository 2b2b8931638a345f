"""LightningDataModules, one file per dataset family, all decoding into in-memory ArrayImageDatasets."""

from datamodules.arrays import (
    ArrayImageDataset,
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
    "train_transform",
]
