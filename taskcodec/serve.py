"""``taskcodec serve -m MODEL``: the classifying HTTP endpoint, with dynamic batching and admission control.

    POST /v1/classify?topk=K   body: one container (``taskcodec compress`` output, one image or many)
                               -> {"model": id, "images": n, "results": [{"name", "top": [...]}, ...]}
    GET  /health               -> {"status": "ok", "model": id, "requests": n, "queue_images": n, ...}
    GET  /metrics              -> Prometheus text format (queue depth, batch sizes, queue and compute
                                  latency histograms, answers by status)
    GET  /                     the page: a photo coded in the browser, sent, labelled (taskcodec/web/)

``MODEL`` is a ``server-<id>.onnx`` (onnxruntime, no torch: see :mod:`taskcodec.server_model`) or a
``decoder-<id>.pt`` (PyTorch). Built on FastAPI + uvicorn. Every request's records join one queue,
and a single batcher task decodes up to ``max_batch`` images at a time (waiting at most
``batch_timeout`` for more), off the event loop, and hands each request its rows back.

Admission control, as Triton and TorchServe do it: the queue holds at most ``max_queue`` images; a
request that does not fit is answered 503 with ``Retry-After`` at once. A request still waiting
after ``max_wait`` seconds is answered 503 and never computed. An overloaded server thus answers
what it admits within about ``max_wait`` plus one batch's compute, and refuses the rest quickly,
instead of accepting work it would finish seconds late. Each 200 carries ``Server-Timing`` with
its queue and compute milliseconds.

Hostile requests get a 4xx with the error's message and never take the server down: a body over
``max_body`` bytes (413, read no further), more than ``max_images`` images or more than the queue
holds (413), a container of another model (409), and truncated or garbage data (400). Anything
else is counted as an error and answered 500 with a message; the server keeps serving.

Nothing here imports torch unless the model is a ``decoder-<id>.pt``.
"""

# no `from __future__ import annotations` here: FastAPI reads the endpoint's annotations at definition
# time, and Request is imported inside create_app (the module imports without fastapi installed)
import asyncio
import collections
import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field

from taskcodec.errors import BitstreamError, CheckpointError, ConfigError, OverloadedError, TaskcodecError

DEFAULT_MAX_BODY = 1 << 20
DEFAULT_MAX_IMAGES = 256
DEFAULT_MAX_BATCH = 32
DEFAULT_BATCH_TIMEOUT = 0.002
DEFAULT_MAX_QUEUE = 256
DEFAULT_MAX_WAIT = 0.1
#: environment variable carrying create_app's arguments to each worker process (``--workers N``)
CONFIG_ENV = "TASKCODEC_SERVE_CONFIG"


@dataclass
class _Job:
    records: list
    future: asyncio.Future
    enqueued: float
    timer: asyncio.TimerHandle | None = None
    started: float | None = None
    timing: dict = field(default_factory=dict)


class ServeMetrics:
    """The endpoint's Prometheus metrics, in a registry of its own (several apps may share a process)."""

    def __init__(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError as e:
            raise ConfigError('`taskcodec serve` needs prometheus-client: pip install "taskcodec[serve]"') from e
        r = self.registry = CollectorRegistry()
        seconds = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
        self.queue_images = Gauge("taskcodec_queue_images", "Images admitted and waiting for the decoder", registry=r)
        self.batch_images = Histogram("taskcodec_batch_images", "Images per decoder call",
                                      buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)  # fmt: skip
        self.queue_seconds = Histogram("taskcodec_queue_seconds", "Time a request waited for the decoder",
                                       buckets=seconds, registry=r)  # fmt: skip
        self.compute_seconds = Histogram("taskcodec_compute_seconds", "Time of the decoder call that served a request",
                                         buckets=seconds, registry=r)  # fmt: skip
        self.responses = Counter("taskcodec_responses", "Answers to /v1/classify by HTTP status", ["status"], registry=r)
        self.rejected = Counter("taskcodec_rejected", "Requests answered 503, by reason (queue_full, deadline)",
                                ["reason"], registry=r)  # fmt: skip
        self.images = Counter("taskcodec_images", "Images classified", registry=r)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class Batcher:
    """Collects records from concurrent requests into a bounded queue; decodes them in batches on one thread.

    Args:
        decode: records -> logits (rows in the same order), run in the default executor.
        max_batch: most images per ``decode`` call (a larger single request is decoded alone).
        batch_timeout: how long a batch that is not full waits for more images (seconds).
        max_queue: most images admitted and waiting; a request that does not fit gets
            :class:`OverloadedError` at once.
        max_wait: a request still waiting after this many seconds gets :class:`OverloadedError`
            and is never decoded (``None``: no deadline).
        metrics: where queue depth, batch sizes and latencies are recorded (optional).
    """

    def __init__(self, decode, max_batch: int = DEFAULT_MAX_BATCH, batch_timeout: float = DEFAULT_BATCH_TIMEOUT,
                 max_queue: int = DEFAULT_MAX_QUEUE, max_wait: float | None = DEFAULT_MAX_WAIT,
                 metrics: ServeMetrics | None = None) -> None:  # fmt: skip
        if max_batch < 1 or max_queue < 1 or batch_timeout < 0 or (max_wait is not None and max_wait <= 0):
            raise ConfigError(f"max_batch and max_queue must be >= 1, batch_timeout >= 0 and max_wait > 0; got "
                              f"{max_batch}, {max_queue}, {batch_timeout}, {max_wait}")  # fmt: skip
        self.decode, self.max_batch, self.batch_timeout = decode, max_batch, batch_timeout
        self.max_queue, self.max_wait, self.metrics = max_queue, max_wait, metrics
        self.jobs: collections.deque[_Job] = collections.deque()
        self.queued_images = 0
        self.batches = 0
        self.rejected = {"queue_full": 0, "deadline": 0}
        self._seconds_per_image = 0.0  # moving average of compute time, for Retry-After
        self._wake: asyncio.Event | None = None

    def _set_depth(self, delta: int) -> None:
        self.queued_images += delta
        if self.metrics:
            self.metrics.queue_images.set(self.queued_images)

    def _reject(self, reason: str, message: str) -> OverloadedError:
        self.rejected[reason] += 1
        if self.metrics:
            self.metrics.rejected.labels(reason).inc()
        drain = self.queued_images * self._seconds_per_image
        return OverloadedError(message, retry_after=max(1, min(60, math.ceil(drain))))

    async def submit(self, records: list) -> tuple:
        """``(logits rows, {"queue_s", "compute_s"})`` of these records; OverloadedError when refused."""
        n = len(records)
        if self.queued_images + n > self.max_queue:
            raise self._reject("queue_full", f"the queue is full ({self.queued_images} images waiting, room for "
                                              f"{self.max_queue}); retry later")  # fmt: skip
        loop = asyncio.get_running_loop()
        if self._wake is None:
            self._wake = asyncio.Event()
        job = _Job(records, loop.create_future(), loop.time())
        if self.max_wait is not None:
            job.timer = loop.call_later(self.max_wait, self._expire, job)
        self.jobs.append(job)
        self._set_depth(n)
        self._wake.set()
        rows = await job.future
        return rows, job.timing

    def _expire(self, job: _Job) -> None:
        """A job that waited past ``max_wait`` leaves the queue unanswered by the decoder."""
        if job.started is None and not job.future.done():
            self._set_depth(-len(job.records))
            job.future.set_exception(self._reject("deadline", f"the request waited over {self.max_wait * 1000:.0f} ms "
                                                              "for the decoder; retry later"))  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        """A FastAPI lifespan: the batcher runs while the application does."""
        self._wake = asyncio.Event()
        task = asyncio.create_task(self.run())
        yield
        task.cancel()

    def _take(self, jobs: list[_Job], count: int, now: float) -> int:
        """Move jobs from the queue into the batch (skipping expired ones) while they fit; returns the count."""
        while self.jobs and count < self.max_batch:
            job = self.jobs[0]
            if job.future.done():  # expired: its images already left the queue's count
                self.jobs.popleft()
                continue
            if jobs and count + len(job.records) > self.max_batch:
                break
            self.jobs.popleft()
            job.started = now
            if job.timer is not None:
                job.timer.cancel()
            self._set_depth(-len(job.records))
            jobs.append(job)
            count += len(job.records)
        return count

    async def _next_batch(self) -> list[_Job]:
        loop = asyncio.get_running_loop()
        jobs: list[_Job] = []
        count, deadline = 0, None
        while True:
            self._wake.clear()
            count = self._take(jobs, count, loop.time())
            if count >= self.max_batch or (jobs and self.jobs):  # full, or the next job does not fit
                return jobs
            if jobs:
                deadline = deadline or loop.time() + self.batch_timeout
                if loop.time() >= deadline:
                    return jobs
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), deadline - loop.time())
            else:
                await self._wake.wait()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._next_batch()
            records = [r for j in jobs for r in j.records]
            start = time.perf_counter()
            try:
                logits = await loop.run_in_executor(None, self.decode, records)
            except Exception as e:  # a bad record fails its batch: retry each job alone so others still succeed
                if len(jobs) == 1:
                    jobs[0].future.set_exception(e)
                    continue
                for j in jobs:
                    start = time.perf_counter()
                    try:
                        rows = await loop.run_in_executor(None, self.decode, j.records)
                    except Exception as e2:  # noqa: BLE001
                        j.future.set_exception(e2)
                    else:
                        self._answer(j, rows, time.perf_counter() - start)
                continue
            compute = time.perf_counter() - start
            self.batches += 1
            self._seconds_per_image = 0.8 * self._seconds_per_image + 0.2 * compute / len(records)
            if self.metrics:
                self.metrics.batch_images.observe(len(records))
            offset = 0
            for j in jobs:
                self._answer(j, logits[offset : offset + len(j.records)], compute)
                offset += len(j.records)

    def _answer(self, job: _Job, rows, compute: float) -> None:
        job.timing.update(queue_s=job.started - job.enqueued, compute_s=compute)
        if self.metrics:
            self.metrics.queue_seconds.observe(job.timing["queue_s"])
            self.metrics.compute_seconds.observe(compute)
        job.future.set_result(rows)


def create_app(model, max_body: int = DEFAULT_MAX_BODY, max_images: int = DEFAULT_MAX_IMAGES,
               max_batch: int = DEFAULT_MAX_BATCH, batch_timeout: float = DEFAULT_BATCH_TIMEOUT,
               threads: int | None = None, max_queue: int = DEFAULT_MAX_QUEUE,
               max_wait: float | None = DEFAULT_MAX_WAIT, client: str | os.PathLike | None = None,
               results_table: str | os.PathLike | None = None):  # fmt: skip
    """The FastAPI application serving one model, and the page at ``/`` (:mod:`taskcodec.web`).

    Args:
        model: a ``server-<id>.onnx`` or ``decoder-<id>.pt`` path, or a loaded
            :class:`~taskcodec.server_model.ServerModel`.
        threads: the model's intra-op threads (default: its runtime's own choice).
        client: the ``client-<id>.onnx`` the page runs in the browser (default: the one beside ``model``).
        results_table: an evaluate.py ``rate_accuracy.csv``: the page shows JPEG at the quality reaching the
            reference's top-1.
        Others: see :class:`Batcher` and the module docstring.
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import Response

    from taskcodec.container import read_container
    from taskcodec.report import label_rows
    from taskcodec.server_model import load_server_model

    if max_body < 1 or max_images < 1:
        raise ConfigError(f"max_body and max_images must be >= 1, got {max_body} and {max_images}")
    metrics = ServeMetrics()
    batcher = Batcher(None, max_batch, batch_timeout, max_queue, max_wait, metrics)  # checks its arguments first
    model_path = model if isinstance(model, (str, os.PathLike)) else None  # the page's client is found beside it
    if model_path is not None:
        model = load_server_model(model, threads)
    batcher.decode = model.decode
    codec_id, meta = model.codec_id, model.meta
    stats = {"requests": 0, "errors": 0, "images": 0, "started": time.time()}
    app = FastAPI(title="taskcodec", lifespan=batcher.lifespan)
    app.state.batcher, app.state.metrics, app.state.model = batcher, metrics, model
    from taskcodec.web import mount_web

    mount_web(app, model_path, codec_id, client, results_table, max_body)

    def answer(status: int, body: dict, headers: dict | None = None) -> Response:
        metrics.responses.labels(str(status)).inc()
        return Response(json.dumps(body), status, headers, media_type="application/json")

    def refuse(status: int, message: str) -> Response:
        stats["errors"] += 1
        return answer(status, {"error": message})

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": codec_id, "family": meta.get("family"), "batches": batcher.batches,
                **{k: stats[k] for k in ("requests", "errors", "images")}, "queue_images": batcher.queued_images,
                "rejected": dict(batcher.rejected), "uptime_s": round(time.time() - stats["started"], 1)}  # fmt: skip

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)

    @app.post("/v1/classify")
    async def classify(request: Request, topk: int = 1):
        stats["requests"] += 1
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_body):
            return refuse(413, f"body of {declared} bytes is over the limit of {max_body}; send fewer images per request")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body:
                return refuse(413, f"body is over the limit of {max_body} bytes; send fewer images per request")
        try:
            container = read_container(bytes(body), "the request body")
        except TaskcodecError as e:
            return refuse(400, str(e))
        if container.codec_id != codec_id:
            return refuse(409, f"the container was made by model {container.codec_id}, this server is model {codec_id}")
        n = len(container.entries)
        if n > max_images:
            return refuse(413, f"{n} images in one request, over the limit of {max_images}; split the container")
        if n > batcher.max_queue:
            return refuse(413, f"{n} images in one request, more than this server's queue holds "
                               f"({batcher.max_queue}); split the container")  # fmt: skip
        if not 1 <= topk <= 100:
            return refuse(400, f"topk must be in 1..100, got {topk}")
        if n == 0:
            return answer(200, {"model": codec_id, "images": 0, "results": []})
        try:
            logits, timing = await batcher.submit([e.record for e in container.entries])
        except OverloadedError as e:
            return answer(503, {"error": str(e)}, {"Retry-After": str(e.retry_after)})
        except BitstreamError as e:
            return refuse(400, str(e))
        except Exception as e:  # noqa: BLE001  (the server stays up; the client learns what happened)
            return refuse(500, f"internal error: {type(e).__name__}: {e}")
        stats["images"] += n
        metrics.images.inc(n)
        rows = label_rows([{"name": e.name} for e in container.entries], logits, meta, topk)
        timing_header = f"queue;dur={1000 * timing['queue_s']:.2f}, compute;dur={1000 * timing['compute_s']:.2f}"
        return answer(200, {"model": codec_id, "images": n, "results": rows}, {"Server-Timing": timing_header})

    return app


def app_from_environment():
    """The app of one ``--workers`` process: :func:`create_app` with the arguments in ``$TASKCODEC_SERVE_CONFIG``."""
    kwargs = json.loads(os.environ[CONFIG_ENV])
    return create_app(kwargs.pop("model"), **kwargs)


def serve(model_path: str, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, **kwargs) -> None:
    """Run the endpoint with uvicorn until interrupted (``workers`` > 1: that many processes on one socket)."""
    try:
        import uvicorn
    except ImportError as e:
        raise ConfigError('`taskcodec serve` needs fastapi and uvicorn: pip install "taskcodec[serve]"') from e
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if workers == 1:
        uvicorn.run(create_app(model_path, **kwargs), host=host, port=port, log_level="warning")
        return
    if not os.path.isfile(model_path):  # the supervisor loads no model: only the workers hold one
        raise CheckpointError(f"{model_path} is not a file; pass a server-<id>.onnx or decoder-<id>.pt")
    Batcher(None, **{k: kwargs[k] for k in ("max_batch", "batch_timeout", "max_queue", "max_wait") if k in kwargs})
    os.environ[CONFIG_ENV] = json.dumps({"model": str(model_path), **kwargs})
    uvicorn.run("taskcodec.serve:app_from_environment", factory=True, workers=workers, host=host, port=port,
                log_level="warning")  # fmt: skip


def serve_in_thread(app, timeout: float = 20.0):
    """Run ``app`` with uvicorn on 127.0.0.1 (an ephemeral port) in a daemon thread, for tests and benches.

    Returns ``(url, stop)``; ``stop()`` shuts the server down and waits for the thread.
    """
    import socket
    import threading
    import urllib.request

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1.0).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                server.should_exit = True
                raise ConfigError(f"the server on {url} did not start within {timeout} s") from None
            time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)

    return url, stop
