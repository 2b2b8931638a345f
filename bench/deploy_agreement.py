"""The torch-free client against the PyTorch one: same bytes, same labels, no desynchronised record.

    python bench/deploy_agreement.py EXPORT_DIR --out results/deploy/agreement_10cls.json [--num-classes 10]

For an export with a factorized entropy model: writes the ONNX client (``taskcodec export --onnx``),
encodes the official val images of the data's classes with onnxruntime at 1 and 2 threads and
batches of 1 and 64, and with the PyTorch encoder; the PyTorch decoder reads every record. Reports,
per setting: records byte-identical to PyTorch's, label agreement of the server on the two sets of
records, and desynchronised records: records whose decoded latent differs from the one the ONNX
client quantised (the server read other symbols than were sent), or that fail to decode.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datamodules.tiny_imagenet import TinyImageNetDataModule  # noqa: E402
from taskcodec.bitstream import unpack_record  # noqa: E402
from taskcodec.client import load_onnx_client  # noqa: E402
from taskcodec.errors import TaskcodecError  # noqa: E402
from taskcodec.evaluation import to_tensor  # noqa: E402
from taskcodec.export import load_decoder, load_encoder  # noqa: E402
from taskcodec.onnx_export import export_onnx_client  # noqa: E402
from taskcodec.provenance import bench_parser, start_bench, write_provenance  # noqa: E402


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("export", type=Path, help="a folder holding encoder-<id>.pt and decoder-<id>.pt")
    ap.add_argument("--num-classes", type=int, default=10)
    args = ap.parse_args()
    start_bench(args)
    enc_path = sorted(args.export.glob("encoder-*.pt"))[0]
    encoder, meta = load_encoder(enc_path)
    decoder, _ = load_decoder(enc_path.with_name(enc_path.name.replace("encoder-", "decoder-")))
    onnx_path, _ = export_onnx_client(encoder, args.export, meta["codec_id"], meta)  # beside the export, not in results/
    dm = TinyImageNetDataModule(root=args.data, num_classes=args.num_classes, num_workers=0)
    dm.setup("test")
    images = dm.test_set.images
    with torch.no_grad():
        torch_records = [r for i in range(0, len(images), 250) for r in encoder.encode(to_tensor(images[i : i + 250]))]
        torch_labels = torch.cat([decoder.decode(torch_records[i : i + 250])["logits"].argmax(1)
                                  for i in range(0, len(images), 250)])  # fmt: skip
    eb = encoder.entropy.entropy_bottleneck
    medians = eb._get_medians().detach().reshape(1, -1, 1, 1).numpy()
    rows = []
    for threads in (1, 2):
        client = load_onnx_client(onnx_path, threads=threads)
        for batch in (1, 64):
            records, sent = [], []
            for i in range(0, len(images), batch):
                chunk = images[i : i + batch]
                records += client.encode(chunk)
                (y,) = client.session.run(["y"], {"x": chunk.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)})
                sent.append(np.rint(y - medians))  # what the client quantised and coded
            sent_y = np.concatenate(sent) + medians
            desync = 0
            labels = []
            with torch.no_grad():
                for i in range(0, len(records), 250):
                    part = records[i : i + 250]
                    try:
                        out = decoder.decode(part)
                    except TaskcodecError:
                        desync += len(part)
                        labels.append(torch.full((len(part),), -1))
                        continue
                    got = out["y_hat"].numpy()
                    desync += int((np.abs(got - sent_y[i : i + 250]).reshape(len(part), -1).max(1) > 0).sum())
                    labels.append(out["logits"].argmax(1))
            labels_t = torch.cat(labels)
            rows.append({
                "onnx_threads": threads, "batch": batch, "images": len(records),
                "identical_records": int(sum(a == b for a, b in zip(records, torch_records, strict=True))),
                "label_agreement": float((labels_t == torch_labels).float().mean()),
                "desynchronised_records": desync,
                "mean_bytes": float(np.mean([len(r) for r in records])),
                "sizes_ok": all(unpack_record(r)[:2] == tuple(images.shape[1:3]) for r in records),
            })  # fmt: skip
            print(json.dumps(rows[-1]))
    write_provenance(
        args.out, export=str(enc_path), codec_id=meta["codec_id"], onnx=str(onnx_path), settings=rows
    )


if __name__ == "__main__":
    main()
