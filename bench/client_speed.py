"""Client encode and server decode throughput of exported codecs against JPEG, one thread, one run.

    python bench/client_speed.py --out results/light_10cls/client_speed.json EXPORT_DIR...

On the same decoded RGB images (the official val images of the data config's classes), with one
torch thread, in one process:

* client: uint8 RGB -> record bytes (float conversion, network, quantisation, range coding)
  against Pillow JPEG q=30 ``optimize=True`` (4:2:0), both from the same arrays;
* server: records -> labels against JPEG file -> Pillow decode -> the reference classifier;
* the entropy stage alone (for a hyperprior ``h_a``, ``h_s`` in float64, quantisation; then range
  coding) with the compiled coder and with the Python reference coder, on the codec's own latents,
  and the analysis network alone: where the client's time goes;
* the torch-free client (``taskcodec export --onnx``, onnxruntime with one thread): encode images/s
  and whether its records are byte-identical to the PyTorch client's.

Each throughput is the median of ``--repeats`` timed runs after a warm-up. Absolute numbers depend
on the machine and its load; the ratios, measured side by side, are the result.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datamodules import study_datamodule  # noqa: E402
from taskcodec.cost import (  # noqa: E402
    classifier_macs,
    client_macs,
    images_per_second,
    jpeg_files,
    median_seconds,
    parameters,
)
from taskcodec.evaluation import to_tensor  # noqa: E402
from taskcodec.export import load_decoder, load_encoder  # noqa: E402
from taskcodec.models import load_image_classifier  # noqa: E402
from taskcodec.provenance import bench_parser, start_bench, write_provenance  # noqa: E402


def entropy_stage_only(encoder, images: np.ndarray, compiled: bool, repeats: int) -> float:
    """Images/s of the entropy stage alone (latents computed once), on one coder path."""
    os.environ["TASKCODEC_CODER"] = "auto" if compiled else "python"
    y = encoder.analysis(encoder._pad(to_tensor(images)))
    try:
        from taskcodec.range_coder import BatchEncoder

        def run() -> None:
            enc = BatchEncoder(len(y), compiled=compiled)
            encoder.entropy.write(y, enc)
            enc.flush()

        return len(images) / median_seconds(run, repeats)
    finally:
        os.environ["TASKCODEC_CODER"] = "auto"


def onnx_client_speed(encoder, meta: dict, images: np.ndarray, records: list[bytes], base: dict, args) -> dict:
    """The torch-free client (``taskcodec export --onnx``: onnxruntime, one thread) on the same images:
    images/s, its ratio to Pillow JPEG, and the share of its records byte-identical to the PyTorch client's."""
    from taskcodec.client.runtime import OnnxClient
    from taskcodec.errors import TaskcodecError
    from taskcodec.onnx_export import export_onnx_client

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path, _ = export_onnx_client(encoder, tmp, meta["codec_id"], meta)
        except TaskcodecError as e:
            return {"onnx_client": f"no ONNX client: {e}"}
        client = OnnxClient(path, threads=1)

        def run() -> list[bytes]:
            return [r for i in range(0, len(images), args.batch) for r in client.encode(images[i : i + args.batch])]

        same = float(np.mean([a == b for a, b in zip(run(), records, strict=True)]))
        per_s = len(images) / median_seconds(run, args.repeats)
    return {"onnx_client_encode_images_per_s": per_s, "onnx_client_encode_vs_jpeg": per_s / base["jpeg_encode_images_per_s"],
            "onnx_client_records_identical": same}  # fmt: skip


def measure(export: Path, images: np.ndarray, reference, ref_macs: int, base: dict, args) -> dict:
    enc_path = next(iter(sorted(export.glob("encoder-*.pt")) + sorted(export.glob("export/encoder-*.pt"))))
    encoder, meta = load_encoder(enc_path)
    decoder, _ = load_decoder(enc_path.with_name(enc_path.name.replace("encoder-", "decoder-")))
    with torch.no_grad():
        records = [r for i in range(0, len(images), args.batch) for r in encoder.encode(to_tensor(images[i : i + args.batch]))]
        enc_per_s = images_per_second(encoder.encode, images, args.batch, args.repeats)

        def server() -> None:
            for i in range(0, len(records), args.batch):
                decoder.decode(records[i : i + args.batch])["logits"].argmax(1)

        server_per_s = len(records) / median_seconds(server, args.repeats)
        coder = {"compiled": entropy_stage_only(encoder, images, True, args.repeats),
                 "python": entropy_stage_only(encoder, images, False, 1)}  # fmt: skip
        # the analysis network alone (float conversion included): what bounds the client when the coder is fast
        analysis_per_s = images_per_second(lambda x: encoder.analysis(encoder._pad(x)), images, args.batch, args.repeats)
    macs = client_macs(encoder, tuple(images.shape[1:3]))
    row = {
        "export": str(enc_path), "family": meta["family"], "config": encoder.config, "lmbda": meta.get("lmbda"),
        "recipe": meta.get("recipe"), "bytes_per_image": float(np.mean([len(r) for r in records])),
        "client_params": parameters(encoder), "client_macs": macs, "client_macs_share": macs / ref_macs,
        "client_encode_images_per_s": enc_per_s, "client_encode_vs_jpeg": enc_per_s / base["jpeg_encode_images_per_s"],
        "server_images_per_s": server_per_s,
        "server_vs_jpeg_decode_plus_reference": server_per_s / base["jpeg_decode_plus_reference_images_per_s"],
        "analysis_only_images_per_s": analysis_per_s,
        "entropy_stage_images_per_s": coder, "entropy_stage_compiled_vs_python_coder": coder["compiled"] / coder["python"],
        **onnx_client_speed(encoder, meta, images, records, base, args),
    }  # fmt: skip
    print(json.dumps({k: v for k, v in row.items() if k != "config"}))
    return row


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("exports", nargs="+", type=Path)
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument(
        "--reference",
        default=None,
        help="reference checkpoint (default: logs/reference/<n>cls/checkpoints/best.ckpt)",
    )
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jpeg-quality", type=int, default=30)
    args = ap.parse_args()
    start_bench(args)
    default_ref = "imagenette" if args.dataset == "imagenette" else f"{args.num_classes}cls"
    ref_path = args.reference or str(ROOT / f"logs/reference/{default_ref}/checkpoints/best.ckpt")
    dm = study_datamodule(args.dataset, args.data, args.num_classes)
    dm.setup("test")
    images = dm.test_set.images
    reference = load_image_classifier(ref_path)
    ref_macs = classifier_macs(reference, tuple(images.shape[1:3]))
    files = jpeg_files(images, args.jpeg_quality)

    def jpeg_server() -> None:
        with torch.no_grad():
            for i in range(0, len(files), args.batch):
                arr = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in files[i : i + args.batch]])
                reference(to_tensor(arr)).argmax(1)

    base = {
        "dataset": args.dataset, "image_size": list(images.shape[1:3]), "images": len(images), "torch_threads": torch.get_num_threads(), "batch": args.batch,
        "jpeg_quality": args.jpeg_quality, "jpeg_bytes_per_image": float(np.mean([len(f) for f in files])),
        "jpeg_encode_images_per_s": len(images) / median_seconds(lambda: jpeg_files(images, args.jpeg_quality), args.repeats),
        "jpeg_decode_plus_reference_images_per_s": len(images) / median_seconds(jpeg_server, args.repeats),
        "reference": ref_path, "reference_macs": ref_macs, "reference_params": parameters(reference),
    }  # fmt: skip
    print(json.dumps(base))
    rows = [measure(e, images, reference, ref_macs, base, args) for e in args.exports if e.is_dir()]
    write_provenance(args.out, baseline=base, codecs=rows)


if __name__ == "__main__":
    main()
