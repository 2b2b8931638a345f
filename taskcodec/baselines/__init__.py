"""Standard codecs as real encoders with real byte counts: the baselines the learned codec must beat.

One module per family on a small base (:mod:`taskcodec.baselines.base`: ``Codec``, ``Encoded``,
the registry ``register_baseline``/``make_codec``), in the manner of :mod:`taskcodec.models`:

* :mod:`~taskcodec.baselines.jpeg`: JPEG (and its scan/payload parser), JPEG with custom tables;
* :mod:`~taskcodec.baselines.webp_avif`: WebP and AVIF;
* :mod:`~taskcodec.baselines.resample`: downsampling, alone or before JPEG;
* :mod:`~taskcodec.baselines.block_average`: block means plus a variance side channel;
* :mod:`~taskcodec.baselines.roi`: ROI JPEG (saliency mask, flattened or blurred background).

Importing this package registers them all. The family modules depend on the base (and ROI on
JPEG); nothing depends back. See :mod:`taskcodec.baselines.base` for the byte conventions.
"""

from taskcodec.baselines import block_average, jpeg, resample, roi, webp_avif  # noqa: F401  (registers the families)
from taskcodec.baselines.base import (
    DEFAULT_SWEEPS,
    Codec,
    Encoded,
    Identity,
    available_codecs,
    avif_backend,
    make_codec,
    register_baseline,
)
from taskcodec.baselines.block_average import BlockAverage, png_payload_bytes
from taskcodec.baselines.jpeg import JPEG, JPEGQTable, jpeg_payload_bytes, jpeg_scan_sizes, libjpeg_scaled
from taskcodec.baselines.resample import Downsample, DownsampleJPEG
from taskcodec.baselines.roi import ROIJPEG
from taskcodec.baselines.webp_avif import AVIF, WebP, avif_payload_bytes, webp_payload_bytes

__all__ = [
    "AVIF", "DEFAULT_SWEEPS", "ROIJPEG", "BlockAverage", "JPEG", "Codec", "Downsample", "DownsampleJPEG", "Encoded",
    "Identity", "JPEGQTable", "WebP", "available_codecs", "avif_backend", "avif_payload_bytes", "jpeg_payload_bytes",
    "jpeg_scan_sizes", "libjpeg_scaled", "make_codec", "png_payload_bytes", "register_baseline", "webp_payload_bytes",
]  # fmt: skip
