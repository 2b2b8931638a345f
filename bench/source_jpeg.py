"""What the test images already are: Tiny ImageNet's files are JPEGs, so every codec re-codes a JPEG.

    python bench/source_jpeg.py --out results/source_jpeg_100cls [--num-classes 100 --qualities 20 30 50 75 90]

For the official val images of the first ``--num-classes`` classes (the tables' test images) it
reads each source file as stored in the dataset: its size, its chroma subsampling and the libjpeg
quality whose standard tables equal its quantisation tables (``None`` when none does). Then it
re-encodes the decoded RGB with the tables' JPEG baseline (``taskcodec.baselines``: Pillow,
4:2:0, optimised Huffman) at each ``--qualities`` and reports the mean file bytes and how far the
re-decoded pixels are from the source's (mean absolute error, PSNR, and the share of images that come
back identical). A quality equal to the source's re-quantises with the same tables, so it is nearly
lossless: the JPEG point there is the source file with its Huffman tables optimised, not a new
trade-off. Below it, the images are compressed twice (the `q=50` step sizes are twice `q=75`'s).

Writes source_jpeg.json and provenance.json to ``--out``. No torch work.
"""

from __future__ import annotations

import io
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from taskcodec.analysis.frequency import STANDARD_LUMA  # noqa: E402
from taskcodec.baselines import make_codec  # noqa: E402
from taskcodec.baselines.jpeg import libjpeg_scaled  # noqa: E402
from taskcodec.datasets import tiny_imagenet_split  # noqa: E402
from taskcodec.errors import DataError  # noqa: E402
from taskcodec.io import read_rgb  # noqa: E402
from taskcodec.provenance import bench_parser, start_bench, write_json, write_provenance  # noqa: E402


def libjpeg_quality(luma_table: list[int]) -> int | None:
    """The libjpeg quality (1..100) whose scaled standard luminance table is ``luma_table``, else None.

    Both tables are row by row (natural order), the order Pillow reports a file's tables in.
    """
    table = list(luma_table)
    return next((q for q in range(1, 101) if libjpeg_scaled(STANDARD_LUMA, q) == table), None)


def describe_source(data: bytes) -> dict:
    """Size, subsampling and libjpeg quality of one stored JPEG file."""
    from PIL import Image, JpegImagePlugin, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"a source image is not a readable image ({err})") from err
    if im.format != "JPEG":
        return {"bytes": len(data), "format": im.format, "subsampling": None, "quality": None}
    sampling = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}.get(JpegImagePlugin.get_sampling(im), "other")
    return {"bytes": len(data), "format": "JPEG", "subsampling": sampling, "quality": libjpeg_quality(im.quantization[0])}


def requantise(images: np.ndarray, quality: int) -> dict:
    """Mean file bytes and pixel error of re-encoding ``images`` with the tables' JPEG at ``quality``."""
    codec = make_codec("jpeg", quality)
    sizes, mae, mse, same = [], [], [], 0
    for image in images:
        enc = codec.encode(image)
        diff = enc.decoded.astype(np.float64) - image
        sizes.append(enc.file_bytes)
        mae.append(np.abs(diff).mean())
        mse.append((diff**2).mean())
        same += int(not diff.any())
    mean_mse = float(np.mean(mse))
    return {
        "quality": quality,
        "file_bytes_per_image": float(np.mean(sizes)),
        "mae": float(np.mean(mae)),
        "psnr_db": float(10 * np.log10(255.0**2 / mean_mse)) if mean_mse > 0 else None,
        "identical_share": same / len(images),
    }


def main() -> None:
    p = bench_parser(__doc__, out="results/source_jpeg_100cls", threads=None)
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--qualities", type=int, nargs="+", default=[20, 30, 50, 75, 90])
    args = p.parse_args()
    start_bench(args)
    split = tiny_imagenet_split(args.data, "val", num_classes=args.num_classes)
    sources, images = [], []
    for i, name in enumerate(split.names):  # each file read once: described as stored, decoded as the tables decode it
        data = split.read(i)
        sources.append(describe_source(data))
        images.append(read_rgb(data, name))
    qualities = Counter(s["quality"] for s in sources)
    result = {
        "images": len(split),
        "source": {
            "file_bytes_per_image": float(np.mean([s["bytes"] for s in sources])),
            "formats": dict(Counter(s["format"] for s in sources)),
            "subsampling": dict(Counter(s["subsampling"] for s in sources)),
            "libjpeg_quality": {str(q): n for q, n in qualities.most_common()},
        },
        "requantised": [requantise(images, q) for q in args.qualities],
    }
    out = Path(args.out)
    write_json(out / "source_jpeg.json", result)
    write_provenance(out / "provenance.json", args=vars(args))
    print(f"{len(split)} images; source: {result['source']}")
    for r in result["requantised"]:
        print(f"  q={r['quality']:>3}: {r['file_bytes_per_image']:7.1f} B, MAE {r['mae']:.2f}, PSNR {r['psnr_db']:.1f} dB, "
              f"identical {r['identical_share']:.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
