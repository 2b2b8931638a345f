"""Load on `taskcodec serve` against the same server design receiving JPEG files, on 127.0.0.1 only.

    python bench/serve_load.py --decoder DEC.pt --encoder ENC.pt --reference REF.ckpt --out results/deploy/serve_load.json

Two servers run in this process's threads (uvicorn, 127.0.0.1, ephemeral ports), both with the
batcher of ``taskcodec.serve``: the codec server (records -> labels) and a JPEG server (JPEG file
-> Pillow decode -> the reference classifier), one image per request. A small asyncio client
(httpx) sends ``--requests`` requests at 1, 8 and 64 concurrent clients to each and reports
throughput and p50/p99 latency. Nothing may be lost: every request must be answered 200 with the
label that the same model gives offline, or the run fails.
"""

from __future__ import annotations

import asyncio
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from fastapi import Request  # at module level: FastAPI resolves the endpoint's (string) annotations here

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from taskcodec.container import Entry, write_container  # noqa: E402
from taskcodec.cost import jpeg_files  # noqa: E402
from taskcodec.evaluation import to_tensor  # noqa: E402
from taskcodec.export import load_decoder, load_encoder  # noqa: E402
from taskcodec.models import load_image_classifier  # noqa: E402
from taskcodec.provenance import bench_parser, start_bench, write_provenance  # noqa: E402
from taskcodec.serve import Batcher, create_app, serve_in_thread  # noqa: E402


def jpeg_app(reference_ckpt: str, max_batch: int, batch_timeout: float):
    """The same server design for JPEG: a file per request, decoded with Pillow, classified by the reference."""
    from fastapi import FastAPI
    from PIL import Image

    classifier = load_image_classifier(reference_ckpt)

    def decode(files: list[bytes]):
        arr = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in files])
        with torch.no_grad():
            return classifier(to_tensor(arr))

    batcher = Batcher(decode, max_batch, batch_timeout)
    app = FastAPI(lifespan=batcher.lifespan)

    async def classify(request: Request):
        logits = await batcher.submit([await request.body()])
        return {"results": [{"top": [{"class": int(logits[0].argmax())}]}]}

    app.post("/v1/classify")(classify)
    app.get("/health")(lambda: {"status": "ok", "batches": batcher.batches})
    return app


async def load(url: str, bodies: list[bytes], expected: list[int], concurrency: int) -> dict:
    import httpx

    latencies: list[float] = []
    wrong = failed = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(bodies)):
        queue.put_nowait(i)

    async def worker(client) -> None:
        nonlocal wrong, failed
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t = time.perf_counter()
            r = await client.post(f"{url}/v1/classify", content=bodies[i])
            latencies.append(time.perf_counter() - t)
            if r.status_code != 200:
                failed += 1
            elif r.json()["results"][0]["top"][0]["class"] != expected[i]:
                wrong += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        start_t = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start_t
    q = statistics.quantiles(latencies, n=100)
    return {"concurrency": concurrency, "requests": len(bodies), "answered_ok": len(bodies) - failed, "failed": failed,
            "wrong_labels": wrong, "requests_per_s": len(bodies) / wall, "p50_ms": 1000 * q[49], "p99_ms": 1000 * q[98]}  # fmt: skip


def main() -> None:
    ap = bench_parser(__doc__, threads=2)
    ap.add_argument("--decoder", required=True)
    ap.add_argument("--encoder", required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--batch-timeout-ms", type=float, default=5.0)
    args = ap.parse_args()
    start_bench(args)
    from datamodules.tiny_imagenet import TinyImageNetDataModule

    dm = TinyImageNetDataModule(root=args.data, num_classes=args.num_classes, num_workers=0)
    dm.setup("test")
    images = dm.test_set.images[: args.requests]
    encoder, meta = load_encoder(args.encoder)
    decoder, _ = load_decoder(args.decoder)
    with torch.no_grad():
        records = encoder.encode(to_tensor(images))
        codec_expected = decoder.decode(records)["logits"].argmax(1).tolist()
        files = jpeg_files(images, 30)
        from PIL import Image

        arr = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in files])
        jpeg_expected = load_image_classifier(args.reference)(to_tensor(arr)).argmax(1).tolist()
    codec_bodies = [write_container([Entry(r)], meta["codec_id"]) for r in records]
    servers = {
        "taskcodec": (create_app(args.decoder, max_batch=args.max_batch, batch_timeout=args.batch_timeout_ms / 1000),
                      codec_bodies, codec_expected),
        "jpeg_q30+reference": (jpeg_app(args.reference, args.max_batch, args.batch_timeout_ms / 1000), files, jpeg_expected),
    }  # fmt: skip
    results = {}
    for name, (app, bodies, expected) in servers.items():
        url, stop = serve_in_thread(app)
        results[name] = {"bytes_per_request": float(np.mean([len(b) for b in bodies])),
                         "runs": [asyncio.run(load(url, bodies, expected, c)) for c in args.concurrency]}  # fmt: skip
        stop()
        print(name, json.dumps(results[name]))
    lost = sum(r["failed"] + r["wrong_labels"] for v in results.values() for r in v["runs"])
    for c_run, j_run in zip(results["taskcodec"]["runs"], results["jpeg_q30+reference"]["runs"], strict=True):
        c_run["throughput_vs_jpeg_server"] = c_run["requests_per_s"] / j_run["requests_per_s"]
    write_provenance(
        args.out, torch_threads=args.threads, images=len(images), servers=results, lost_or_wrong=lost
    )
    if lost:
        raise SystemExit(f"{lost} requests lost or answered with the wrong label")


if __name__ == "__main__":
    main()
