"""What each split point asks of the client and the server, against JPEG in the same run.

    python bench/client_cost.py EXPORT_DIR... [--images 256] [--jpeg-quality 30] [--out results/split_10cls/client_cost.json]

For every exported codec (an ``export/`` folder or a run folder holding one):

* client: parameters and FLOPs per image of what the encoder runs (``torch.utils.flop_counter``),
  its share of the reference classifier's FLOPs, and encode images/s (analysis + range coding)
  against Pillow JPEG encode of the same images;
* server: records -> labels images/s against JPEG decode + the reference classifier.

Images are the first ``--images`` official-val images of tiny-imagenet-100 (the data config's
root). Timings are medians of ``--repeats`` runs, on ``torch.get_num_threads()`` threads, batch
``--batch``; absolute numbers depend on the machine, the ratios are the result.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datamodules.tiny_imagenet import TinyImageNetDataModule  # noqa: E402
from taskcodec.cost import macs  # noqa: E402
from taskcodec.evaluation import to_tensor  # noqa: E402
from taskcodec.export import load_decoder, load_encoder  # noqa: E402
from taskcodec.models import ImageClassifier  # noqa: E402
from taskcodec.provenance import bench_parser, start_bench, write_provenance  # noqa: E402


def flops(fn, *args) -> int:
    """FLOPs as this bench reports them: twice the MACs of the project's one counter (taskcodec.cost.macs)."""
    return 2 * macs(fn, *args)


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(d: Path, batches: list, one, args: argparse.Namespace, base: dict, ref_flops: int) -> dict:
    """Client and server cost of one exported codec."""
    enc_path = next(iter(sorted(d.glob("encoder-*.pt")) + sorted(d.glob("export/encoder-*.pt"))))
    encoder, meta = load_encoder(enc_path)
    decoder, _ = load_decoder(enc_path.with_name(enc_path.name.replace("encoder-", "decoder-")))
    with torch.no_grad():
        client_flops = flops(lambda x: encoder.entropy(encoder.analysis(encoder._pad(x))), one)
    records = [r for b in batches for r in encoder.encode(b)]
    encode_s = timed(lambda: [encoder.encode(b) for b in batches], args.repeats)
    decode_s = timed(lambda: [decoder.decode(records[i : i + args.batch])["logits"].argmax(1) for i in range(0, len(records), args.batch)], args.repeats)
    row = {
        "export": str(enc_path), "family": meta["family"], "config": encoder.config, "lmbda": meta.get("lmbda"),
        "bytes_per_image": float(np.mean([len(r) for r in records])),
        "client_params": sum(p.numel() for p in encoder.parameters()),
        "client_flops_per_image": client_flops,
        "client_share_of_reference_flops": client_flops / ref_flops,
        "client_encode_images_per_s": len(records) / encode_s,
        "client_encode_vs_jpeg_encode": (len(records) / encode_s) / base["jpeg_encode_images_per_s"],
        "server_images_per_s": len(records) / decode_s,
        "server_vs_jpeg_decode_plus_reference": (len(records) / decode_s) / base["jpeg_decode_plus_reference_images_per_s"],
    }  # fmt: skip
    print(json.dumps({k: v for k, v in row.items() if k != "config"}))
    return row


def main() -> None:
    # torch's own default thread count, as before the shared parser: the timings are of the whole machine
    p = bench_parser(
        __doc__,
        out=str(ROOT / "results" / "split_10cls" / "client_cost.json"),
        threads=torch.get_num_threads(),
    )
    p.add_argument("exports", nargs="+", help="export folders (or run folders holding export/)")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--jpeg-quality", type=int, default=30)
    args = p.parse_args()
    start_bench(args)

    dm = TinyImageNetDataModule(root=args.data, num_classes=10, num_workers=0)
    dm.setup("test")
    images = dm.test_set.images[: args.images]
    batches = [to_tensor(images[i : i + args.batch]) for i in range(0, len(images), args.batch)]
    pil = [Image.fromarray(im) for im in images]
    one = batches[0][:1]

    def jpeg_encode() -> list[bytes]:
        out = []
        for im in pil:
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=args.jpeg_quality, optimize=True, subsampling=2)  # as taskcodec.baselines.JPEG
            out.append(buf.getvalue())
        return out

    jpegs = jpeg_encode()
    reference = ImageClassifier("resnet18", 10).eval()

    @torch.no_grad()
    def jpeg_decode_classify() -> None:
        for i in range(0, len(jpegs), args.batch):
            arr = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in jpegs[i : i + args.batch]])
            reference(to_tensor(arr)).argmax(1)

    with torch.no_grad():
        ref_flops = flops(reference, one)
    base = {
        "jpeg_quality": args.jpeg_quality,
        "jpeg_bytes_per_image": float(np.mean([len(b) for b in jpegs])),
        "jpeg_encode_images_per_s": len(pil) / timed(jpeg_encode, args.repeats),
        "jpeg_decode_plus_reference_images_per_s": len(pil) / timed(jpeg_decode_classify, args.repeats),
        "reference_flops_per_image": ref_flops,
        "reference_params": sum(p.numel() for p in reference.parameters()),
    }
    rows = [measure(Path(d), batches, one, args, base, ref_flops) for d in args.exports]
    write_provenance(args.out, threads=torch.get_num_threads(), images=len(images), batch=args.batch,
                     baseline=base, codecs=rows)  # fmt: skip
    print(json.dumps(base, indent=1))


if __name__ == "__main__":
    main()
