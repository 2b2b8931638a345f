"""`taskcodec serve` under load, torch-free and PyTorch, against the same server for JPEG + the reference.

    python bench/serve_load.py --decoder DEC.pt --encoder ENC.pt --reference REF.ckpt --out results/deploy/serve_load.json

Each server is its own process on 127.0.0.1 (an ephemeral port), started with the same admission
settings (``--max-batch``, ``--max-queue``, ``--max-wait-ms``, ``--threads``):

* ``onnx``: ``taskcodec serve -m server-<id>.onnx`` (written here by ``taskcodec export DECODER --onnx``),
* ``onnx_2_workers``: the same with ``--workers 2 --threads 1`` (one process with intra-op threads, or two),
* ``pytorch``: ``taskcodec serve -m decoder-<id>.pt``,
* ``jpeg_q30+reference``: the same app (``create_app``) whose model Pillow-decodes JPEG q=30 files sent
  as container records and runs the reference classifier.

A lean asyncio client (HTTP/1.1 keep-alive, one connection per simulated client; a connection closed or
reset with a request in flight counts as dropped) sends one-image requests at 1, 8 and 64 concurrent
clients (``--requests`` each) and a burst of 2,048 requests from 512 clients. A refused request is
sent again until it is answered: first by clients that wait ``Retry-After`` (with jitter), as HTTP asks
of a client, then, at 64 clients and in the burst, by clients that ignore it and send again at once. The servers and the load generator are pinned to disjoint CPUs (``--server-cpus``,
``--client-cpus``; default: the machine's CPUs in two halves), every server to the same ones with as many
intra-op threads as it has CPUs, so the bench measures the server, not itself; each level records the CPU
milliseconds per request of both sides. Per level
it reports admitted (200) and rejected (503) counts, 4xx/5xx, dropped connections, wrong labels
(against the same model offline), admitted requests/s and p50/p99 latency split into queue and compute
(the server's ``Server-Timing``; latency counts from the request's write on an open connection, as wrk
counts it, and the time to open a connection is reported apart), and the server's RSS (all its processes). A 32-client run with 30%
hostile bodies checks that each gets its 4xx. The agreement of the ONNX server's labels with the PyTorch
decoder's is measured on the records of ``--agreement-images`` val images of ``--agreement-classes``.

Without ``--decoder``/``--encoder`` the default export's architecture (light c1: [8, 16, 32] ReLU
convolutions, factorized entropy, resnet18 tail, 10 classes) is built with seeded *untrained* weights,
and without ``--reference`` an untrained resnet18: speeds and agreement, not accuracy (the JSON says so).
Load goes to 127.0.0.1 only, in bounded loops.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results_docs import serve_load as render_serve_load  # noqa: E402
from taskcodec.container import Entry, read_container, write_container  # noqa: E402
from taskcodec.provenance import bench_parser, start_bench, write_provenance  # noqa: E402

JPEG_ID = "6a7065672b726566"  # "jpeg+ref": the JPEG server's model id in its containers
TIMING = re.compile(r"queue;dur=([\d.]+), compute;dur=([\d.]+)")


# ------------------------------------------------------------------------------ the JPEG + reference server
class JpegReferenceModel:
    """A ServerModel: each record is a JPEG file, decoded by Pillow and classified by the reference."""

    codec_id = JPEG_ID

    def __init__(self, reference: str | None, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.classifier = reference_classifier(reference)
        self.meta = {"family": "jpeg+reference"}

    def decode(self, records: list[bytes]) -> np.ndarray:
        import torch
        from PIL import Image

        from taskcodec.evaluation import to_tensor

        arr = np.stack([np.asarray(Image.open(io.BytesIO(r)).convert("RGB")) for r in records])
        with torch.no_grad():
            return self.classifier(to_tensor(arr)).numpy()


def reference_classifier(path: str | None):
    from taskcodec.models import load_image_classifier
    from taskcodec.models.classifier import ImageClassifier

    if path:
        return load_image_classifier(path).eval()
    import torch

    torch.manual_seed(0)
    return ImageClassifier("resnet18", num_classes=10).eval()


def run_jpeg_server(args) -> None:
    import uvicorn

    from taskcodec.serve import create_app, uvicorn_limits

    app = create_app(JpegReferenceModel(args.reference, args.threads), **server_settings(args))
    uvicorn.run(app, host="127.0.0.1", port=args.jpeg_server_port, log_level="warning",
                **uvicorn_limits(max_queue=args.max_queue))  # as `taskcodec serve` runs it


# ------------------------------------------------------------------------------ servers as processes
def server_settings(args) -> dict:
    return {"max_batch": args.max_batch, "max_queue": args.max_queue, "max_wait": args.max_wait_ms / 1000,
            "batch_timeout": args.batch_timeout_ms / 1000, "loop_nice": args.loop_nice}  # fmt: skip


def say(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(cmd: list[str], port: int, cpus: set[int]) -> tuple[subprocess.Popen, str]:
    """Start a server process pinned to ``cpus`` (its threads and worker processes inherit the pinning)."""
    import urllib.request

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tempfile.TemporaryFile("w+")  # not a pipe: a server that logs much must never block on it
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, cpus))  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(3000):  # up to ~5 minutes on a loaded machine
        if proc.poll() is not None:
            log.seek(0)
            raise SystemExit(f"server {cmd} exited: {log.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server {cmd} did not start")


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            pass
    return pids


def rss_mb(pid: int) -> dict:
    """Resident memory of a server's processes now, and the peak (VmHWM) of each, summed."""
    now = peak = 0
    for p in process_tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        now += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
        peak += int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
    return {"rss_mb": round(now / 1024, 1), "peak_rss_mb": round(peak / 1024, 1)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by a server's processes (all their threads)."""
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total / os.sysconf("SC_CLK_TCK")


def full_collections(url: str) -> tuple[float, float]:
    """(count, seconds) of the server's full (generation 2) garbage collections so far, from its /metrics
    (with ``--workers``, one worker's)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as r:
        text = r.read().decode()
    found = {s.name: s.value for f in text_string_to_metric_families(text) if f.name == "taskcodec_gc_pause_seconds"
             for s in f.samples if s.labels.get("generation") == "2"}  # fmt: skip
    return found.get("taskcodec_gc_pause_seconds_count", 0.0), found.get("taskcodec_gc_pause_seconds_sum", 0.0)


# ------------------------------------------------------------------------------ load
def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


class Connection:
    """One simulated client's HTTP/1.1 keep-alive connection: asyncio streams, Content-Length bodies, nothing else.

    A lean client so that the bench measures the server, not itself (an httpx request costs its client
    milliseconds of CPU that grow with the number of connections in its pool). A connection the server
    closes after an answer (``Connection: close``) or while idle is opened again for the next request;
    one closed or reset while a request is in flight raises (the request is counted as dropped).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def connect(self) -> bool:
        """Open the connection if it is not open (never opened, or closed by the server); whether it opened one."""
        if self.reader is not None and not self.reader.at_eof():
            return False
        self.close()
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return True

    async def post(self, path: str, body: bytes) -> tuple[int, dict, bytes]:
        """``(status, headers with lower-case names, body)`` of one POST (opening the connection if needed)."""
        await self.connect()
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        status = int((await self.reader.readuntil(b"\r\n")).split(None, 2)[1])
        headers = {}
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        data = await self.reader.readexactly(int(headers.get("content-length", 0)))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, data


def event_loop_runner() -> asyncio.Runner:
    """uvloop's event loop when it is installed (the server's own, and a lighter client), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def run_load(*args) -> dict:
    with event_loop_runner() as runner:
        return runner.run(load(*args))


async def load(url: str, bodies: list[bytes], expected: list, clients: int, requests: int, honour_retry: bool = False) -> dict:
    """``requests`` requests from ``clients`` concurrent clients; ``expected[k]``: body k's label, or its status as a string.

    A client answered 503 sends the same request again until it is answered otherwise (so every level
    computes all its requests); ``completion_p99_ms`` counts from the first try. ``honour_retry``: it first
    waits ``Retry-After`` seconds times a jitter drawn from [0.5, 1.5) (so refused clients do not all come
    back at once), as RFC 9110 asks of a client; without it, it sends again at once.
    """
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    statuses: Counter = Counter()
    retry_after: Counter = Counter()  # the Retry-After values the 503s carried
    latency_ok, latency_503, queue_ms, compute_ms, completion, connect_ms = [], [], [], [], [], []
    sent_at = []  # when each admitted request's try was sent, seconds from the level's start
    wrong = dropped = unexpected = 0
    next_index = iter(range(requests))
    jitter = np.random.default_rng(clients)
    steady: dict = {}  # "end": (time, admitted) when the last request was taken: every client had work until then

    def take():
        """The shared requests; the first client to find none left marks the end of the steady window."""
        yield from next_index
        steady.setdefault("end", (time.perf_counter(), statuses[200]))

    async def client_loop() -> None:
        nonlocal wrong, dropped, unexpected
        connection = Connection(host, int(port))
        for i in take():
            k = i % len(bodies)
            first = time.perf_counter()
            while True:
                t = time.perf_counter()
                try:
                    async with asyncio.timeout(120):
                        if await connection.connect():  # latency counts from the request's write, as wrk's does
                            connect_ms.append(1000 * (time.perf_counter() - t))
                            t = time.perf_counter()
                        status, headers, data = await connection.post("/v1/classify", bodies[k])
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
                    connection.close()  # closed or reset with the request in flight, or no answer within 120 s
                    dropped += 1
                    break
                now = time.perf_counter()
                elapsed = 1000 * (now - t)
                statuses[status] += 1
                want = expected[k]
                if status == 503:
                    latency_503.append(elapsed)
                    unexpected += "retry-after" not in headers
                    retry_after[headers.get("retry-after")] += 1
                    if honour_retry and "retry-after" in headers:
                        await asyncio.sleep(float(headers["retry-after"]) * jitter.uniform(0.5, 1.5))
                    continue  # the same request again: after Retry-After, or at once
                elif status == 200:
                    latency_ok.append(elapsed)
                    sent_at.append(t - start_t)
                    completion.append(1000 * (now - first))
                    m = TIMING.search(headers.get("server-timing", ""))
                    queue_ms.append(float(m.group(1)))
                    compute_ms.append(float(m.group(2)))
                    if json.loads(data)["results"][0]["top"][0]["class"] != want:  # also a hostile body answered 200
                        wrong += 1
                elif str(status) != want:  # a 4xx/5xx that is not the one this body must get
                    unexpected += 1
                break
        connection.close()

    start_t = time.perf_counter()  # read by client_loop once it runs
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    wall = time.perf_counter() - start_t
    steady_s, steady_admitted = steady["end"][0] - start_t, steady["end"][1]
    return {
        "clients": clients, "requests": requests, "admitted": statuses[200], "rejected_503": statuses[503],
        "status_4xx": sum(v for s, v in statuses.items() if 400 <= s < 500),
        "status_5xx": sum(v for s, v in statuses.items() if s >= 500 and s != 503),
        "dropped": dropped, "wrong_labels": wrong, "unexpected_answers": unexpected, "wall_s": round(wall, 2),
        "admitted_per_s": round(statuses[200] / wall, 1),
        # while every client still had requests to send (the run's end, where fewer clients remain or refused
        # ones wait out Retry-After, is not the load the level names)
        "steady_admitted_per_s": round(steady_admitted / steady_s, 1) if steady_s > 0 and steady_admitted else None,
        "p50_ms": pct(latency_ok, 50), "p99_ms": pct(latency_ok, 99),
        "queue_p50_ms": pct(queue_ms, 50), "queue_p99_ms": pct(queue_ms, 99),
        "compute_p50_ms": pct(compute_ms, 50), "compute_p99_ms": pct(compute_ms, 99),
        "rejected_p99_ms": pct(latency_503, 99), "completion_p99_ms": pct(completion, 99),
        "connections_opened": len(connect_ms), "connect_p99_ms": pct(connect_ms, 99),
        # the level's first second (every client's first request arrives at once) apart from the rest
        "first_second_admitted": sum(a < 1.0 for a in sent_at),
        "first_second_p99_ms": pct([x for x, a in zip(latency_ok, sent_at, strict=True) if a < 1.0], 99),
        "after_first_second_p99_ms": pct([x for x, a in zip(latency_ok, sent_at, strict=True) if a >= 1.0], 99),
        "clients_honour_retry_after": honour_retry, "retry_after_s": dict(sorted(retry_after.items())),
    }  # fmt: skip


def hostile_mix(bodies: list[bytes], labels: list[int], codec_id: str, max_images: int) -> tuple[list[bytes], list]:
    """30% hostile bodies among valid ones, each hostile one with the status it must get (as a string)."""
    rng = np.random.default_rng(0)
    out, want = [], []
    other_id = "f" * 16 if codec_id != "f" * 16 else "e" * 16
    too_many = write_container([Entry(b"\0")] * (max_images + 1), codec_id)
    for b, label in zip(bodies, labels, strict=True):
        kind = rng.random()
        if kind >= 0.3:
            out.append(b), want.append(label)
        elif kind < 0.1:
            out.append(b"GIF89a" + bytes(rng.integers(0, 256, 64, dtype=np.uint8))), want.append("400")
        elif kind < 0.17:
            out.append(b[: len(b) // 2]), want.append("400")
        elif kind < 0.24:
            out.append(write_container(read_container(b).entries, other_id)), want.append("409")
        else:
            out.append(too_many), want.append("413")
    return out, want


def verdict(runs: list[dict]) -> dict:
    """The issue's bar: at 64 clients and the burst, admitted/s >= 90% of the best, p99 <= 3x the 8-client p99."""
    best = max(r["steady_admitted_per_s"] or 0 for r in runs)
    p99_8 = next(r["p99_ms"] for r in runs if r["level"] == "8_clients")
    out = {"best_admitted_per_s": best, "p99_8_clients_ms": p99_8}
    for r in runs:
        if r["level"] in ("64_clients", "burst"):
            name = r["level"] + ("" if r["clients_honour_retry_after"] else "_ignoring_retry_after")
            out[name] = {"throughput_vs_best": round((r["steady_admitted_per_s"] or 0) / best, 3),
                         "p99_vs_8_clients": round(r["p99_ms"] / p99_8, 2) if r["p99_ms"] else None,
                         "holds": (r["steady_admitted_per_s"] or 0) >= 0.9 * best and r["p99_ms"] is not None and r["p99_ms"] <= 3 * p99_8
                         and r["dropped"] == 0}  # fmt: skip
    return out


# ------------------------------------------------------------------------------ the models and data
def make_export(args, tmp: Path) -> tuple[Path, Path, str]:
    """(encoder, decoder, what it is): the given export, or the default architecture with untrained weights."""
    if args.decoder and args.encoder:
        return Path(args.encoder), Path(args.decoder), f"the export {args.decoder}"
    import torch

    from taskcodec.export import export_codec
    from taskcodec.models import create_codec
    from taskcodec.preprocessing import preprocessing_config

    torch.manual_seed(0)
    codec = create_codec("light", classifier="resnet18", num_classes=10, channels=[8, 16, 32], kernel=3, act="relu",
                         entropy="factorized", M=32)  # fmt: skip
    enc, dec = export_codec(codec.eval(), tmp, {"preprocessing": preprocessing_config(64, 64)})
    return enc, dec, "the default export's architecture (light c1, 10 classes) with seeded UNTRAINED weights"


def agreement(enc: Path, dec: Path, onnx_path: Path, images: np.ndarray, threads: int) -> dict:
    import torch

    from taskcodec.evaluation import to_tensor
    from taskcodec.export import load_encoder
    from taskcodec.server_model import OnnxServerModel, TorchServerModel

    encoder, _ = load_encoder(enc)
    with torch.no_grad():
        records = [r for i in range(0, len(images), 250) for r in encoder.encode(to_tensor(images[i : i + 250]))]
    labels = {}
    for name, model in (("pytorch", TorchServerModel(dec, threads)), ("onnx", OnnxServerModel(onnx_path, threads))):
        t = time.perf_counter()
        labels[name] = np.concatenate([model.decode(records[i : i + 64]).argmax(1) for i in range(0, len(records), 64)])
        labels[f"{name}_images_per_s_batch_64"] = round(len(records) / (time.perf_counter() - t), 1)
    return {"images": len(records), "label_agreement": round(float(np.mean(labels["onnx"] == labels["pytorch"])), 5),
            "disagreeing_images": int(np.sum(labels["onnx"] != labels["pytorch"])),
            **{k: v for k, v in labels.items() if k.endswith("_per_s_batch_64")}}  # fmt: skip


def split_cpus(server: list[int] | None, client: list[int] | None) -> tuple[set[int], set[int]]:
    """Disjoint CPU sets for the servers and the load generator (default: the machine's CPUs in two halves).

    With its own CPUs the generator cannot slow the server it measures (nor the server the generator), so
    a collapse under load is the server's. Every server of a run gets the same CPUs, so ratios stay fair.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 and not (server or client):
        return set(cpus), set(cpus)  # nothing to split: both share the one CPU (the JSON says so)
    half = len(cpus) // 2
    server, client = set(server or cpus[half:]), set(client or cpus[:half])
    if server & client or not server <= set(cpus) or not client <= set(cpus):
        raise SystemExit(f"--server-cpus {sorted(server)} and --client-cpus {sorted(client)} must be disjoint "
                         f"subsets of this process's CPUs {cpus}")  # fmt: skip
    return server, client


def main() -> None:
    ap = bench_parser(__doc__, out="results/deploy/serve_load.json", threads=2)
    ap.add_argument("--decoder", help="decoder-<id>.pt (default: the default architecture, untrained)")
    ap.add_argument("--encoder", help="its encoder-<id>.pt")
    ap.add_argument("--reference", help="the reference checkpoint for the JPEG server (default: untrained resnet18)")
    ap.add_argument("--num-classes", type=int, default=10, help="classes whose val images are sent")
    ap.add_argument("--requests", type=int, default=500, help="requests at 1, 8 and 64 clients")
    ap.add_argument("--burst", type=int, nargs=2, default=[2048, 512], metavar=("REQUESTS", "CLIENTS"))
    ap.add_argument("--agreement-classes", type=int, default=100)
    ap.add_argument("--agreement-images", type=int, default=5000)
    ap.add_argument("--servers", nargs="+", default=["onnx", "onnx_2_workers", "pytorch", "jpeg_q30+reference"])
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-queue", type=int, default=256)
    ap.add_argument("--max-wait-ms", type=float, default=100.0)
    ap.add_argument("--batch-timeout-ms", type=float, default=2.0)
    ap.add_argument("--loop-nice", type=int, default=10, help="the servers' --loop-nice")
    ap.add_argument("--server-cpus", type=int, nargs="+", help="CPUs the servers run on (default: the upper half)")
    ap.add_argument("--client-cpus", type=int, nargs="+", help="CPUs the load generator runs on (default: the lower half)")
    ap.add_argument("--note", default="", help="free text kept in the JSON (e.g. what else ran on the machine)")
    ap.add_argument("--jpeg-server-port", type=int, help=argparse.SUPPRESS)  # the JPEG server's own process
    args = ap.parse_args()
    if args.jpeg_server_port:
        return run_jpeg_server(args)

    import torch

    from datamodules.tiny_imagenet import TinyImageNetDataModule
    from taskcodec.cost import jpeg_files
    from taskcodec.export import read_export
    from taskcodec.server_model import OnnxServerModel, TorchServerModel

    start_bench(args)  # torch's threads, and the dataset's default copy for --data
    server_cpus, client_cpus = split_cpus(args.server_cpus, args.client_cpus)
    server_threads = len(server_cpus)
    tmp = Path(tempfile.mkdtemp(prefix="serve_load-"))
    enc, dec, what = make_export(args, tmp)
    codec_id = read_export(dec)["codec_id"]
    subprocess.run([sys.executable, "-m", "taskcodec.cli", "export", str(dec), "--onnx", "--out", str(tmp), "-q"],
                   check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)  # fmt: skip
    onnx_path = tmp / f"server-{codec_id}.onnx"
    say("exported", onnx_path)

    dm = TinyImageNetDataModule(root=args.data, num_classes=args.agreement_classes, num_workers=0)
    dm.setup("test")
    agree = agreement(enc, dec, onnx_path, dm.test_set.images[: args.agreement_images], args.threads)
    say("agreement", json.dumps(agree))

    dm = TinyImageNetDataModule(root=args.data, num_classes=args.num_classes, num_workers=0)
    dm.setup("test")
    images = dm.test_set.images[: args.requests]
    from taskcodec.evaluation import to_tensor
    from taskcodec.export import load_encoder

    encoder, _ = load_encoder(enc)
    with torch.no_grad():
        records = encoder.encode(to_tensor(images))
    codec_bodies = [write_container([Entry(r)], codec_id) for r in records]
    files = jpeg_files(images, 30)
    jpeg_bodies = [write_container([Entry(f)], JPEG_ID) for f in files]
    expected = {
        "onnx": OnnxServerModel(onnx_path, args.threads).decode(records).argmax(1).tolist(),
        "pytorch": TorchServerModel(dec, args.threads).decode(records).argmax(1).tolist(),
        "jpeg": JpegReferenceModel(args.reference, args.threads).decode(files).argmax(1).tolist(),
    }
    settings = ["--max-batch", str(args.max_batch), "--max-queue", str(args.max_queue), "--max-wait-ms",
                str(args.max_wait_ms), "--batch-timeout-ms", str(args.batch_timeout_ms), "--loop-nice", str(args.loop_nice)]  # fmt: skip
    cli = [sys.executable, "-m", "taskcodec.cli", "serve"]
    servers = {
        "onnx": (lambda p: [*cli, "-m", str(onnx_path), "--port", str(p), "--threads", str(server_threads), *settings],
                 codec_bodies, expected["onnx"]),
        "onnx_2_workers": (lambda p: [*cli, "-m", str(onnx_path), "--port", str(p), "--threads", "1", "--workers", "2",
                                      *settings], codec_bodies, expected["onnx"]),
        "pytorch": (lambda p: [*cli, "-m", str(dec), "--port", str(p), "--threads", str(server_threads), *settings],
                    codec_bodies, expected["pytorch"]),
        "jpeg_q30+reference": (lambda p: [sys.executable, __file__, "--jpeg-server-port", str(p), "--threads",
                                          str(server_threads), *(["--reference", args.reference] if args.reference else []),
                                          *settings], jpeg_bodies, expected["jpeg"]),
    }  # fmt: skip
    os.sched_setaffinity(0, client_cpus)  # the load generator (this process) from here on
    pinning = {"server_cpus": sorted(server_cpus), "client_cpus": sorted(client_cpus), "server_threads": server_threads,
               "client": "asyncio streams, HTTP/1.1 keep-alive, one connection per client (bench/serve_load.py)"}
    # clients that wait Retry-After and send again, then the same loads from clients that ignore it
    levels = [("1_client", 1, args.requests, True), ("8_clients", 8, args.requests, True), ("64_clients", 64, args.requests, True),
              ("burst", args.burst[1], args.burst[0], True), ("64_clients", 64, args.requests, False),
              ("burst", args.burst[1], args.burst[0], False)]  # fmt: skip
    results = {}
    for name in args.servers:
        command, bodies, labels = servers[name]
        port = free_port()
        proc, url = start(command(port), port, server_cpus)
        say("started", name)
        try:
            run_load(url, bodies, labels, 4, 32)  # warm-up (first-call allocations, numba, thread pools)
            entry = {"bytes_per_request": float(np.mean([len(b) for b in bodies])), "idle": rss_mb(proc.pid), "runs": []}
            for level, clients, n, honour in levels:
                client_cpu, server_cpu, gc_before = time.process_time(), cpu_seconds(proc.pid), full_collections(url)
                run = {"level": level} | run_load(url, bodies, labels, clients, n, honour)
                gc_after = full_collections(url)
                run["gc_full_collections"] = int(gc_after[0] - gc_before[0])
                run["gc_full_pause_ms"] = round(1000 * (gc_after[1] - gc_before[1]), 1)
                run["client_cpu_ms_per_request"] = round(1000 * (time.process_time() - client_cpu) / n, 2)
                run["server_cpu_ms_per_request"] = round(1000 * (cpu_seconds(proc.pid) - server_cpu) / n, 2)
                run.update(rss_mb(proc.pid))
                entry["runs"].append(run)
                say(name, json.dumps(run))
            if name == "onnx":
                hostile, want = hostile_mix(bodies, labels, codec_id, 256)
                entry["hostile_32_clients"] = run_load(url, hostile, want, 32, len(hostile), True)
                entry["hostile_32_clients"]["hostile_bodies"] = sum(isinstance(w, str) for w in want)
                say(name, "hostile", json.dumps(entry["hostile_32_clients"]))
            entry["verdict"] = verdict(entry["runs"])
            results[name] = entry
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        write_provenance(args.out, model=what, codec_id=codec_id, threads=args.threads, note=args.note, partial=True, pinning=pinning,
                         settings=server_settings(args), agreement=agree, servers=results)  # fmt: skip  (kept if a later server fails)
    bad = sum(r["dropped"] + r["wrong_labels"] + r["unexpected_answers"] + r["status_5xx"]
              for v in results.values() for r in [*v["runs"], *([v["hostile_32_clients"]] if "hostile_32_clients" in v else [])])  # fmt: skip
    write_provenance(args.out, model=what, codec_id=codec_id, threads=args.threads, note=args.note, pinning=pinning,
                     settings=server_settings(args), agreement=agree, servers=results, lost_wrong_or_unexpected=bad)  # fmt: skip
    print(render_serve_load(str(Path(args.out).resolve())))  # the tables docs/serving.md shows, from the JSON just written
    if bad:
        raise SystemExit(f"{bad} requests dropped, wrongly labelled or answered unexpectedly")


if __name__ == "__main__":
    main()
