"""Admission control for ``taskcodec serve``: the bounded queue, its decoder thread, the shed-when-full
middleware and the Prometheus metrics (:mod:`taskcodec.serve` builds the HTTP app around them).

Triton and TorchServe do it this way: the queue holds at most ``max_queue`` images; a request that does
not fit is answered 503 with ``Retry-After`` at once, and one still waiting after ``max_wait`` seconds is
answered 503 and never computed.
"""

import asyncio
import collections
import contextlib
import gc
import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field

from taskcodec.errors import ConfigError, OverloadedError

DEFAULT_MAX_BATCH = 32
DEFAULT_BATCH_TIMEOUT = 0.002
DEFAULT_MAX_QUEUE = 256
DEFAULT_MAX_WAIT = 0.1
DEFAULT_LOOP_NICE = 10


def lower_thread_priority(nice: int) -> None:
    """Raise the calling thread's nice value by ``nice`` (Linux: a per-thread attribute; elsewhere nothing)."""
    if nice > 0 and hasattr(os, "setpriority") and sys.platform.startswith("linux"):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))


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
        self.gc_seconds = Histogram("taskcodec_gc_pause_seconds", "Python garbage collections (they stop every thread "
                                    "holding the GIL, the event loop's included), by generation", ["generation"],
                                    buckets=(0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25), registry=r)  # fmt: skip
        self._gc_start = 0.0

    def on_gc(self, phase: str, info: dict) -> None:
        """A ``gc.callbacks`` entry: times each collection."""
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_seconds.labels(str(info["generation"])).observe(time.perf_counter() - self._gc_start)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class Batcher:
    """Collects records from concurrent requests into a bounded queue; decodes them in batches on a thread of its own.

    The decoder thread takes its next batch from the queue itself and hands results back to the event
    loop, so it never waits for a loop that is busy with connections; and the loop's thread runs at a
    lower priority (``loop_nice``), so that under overload the CPU finishes the work already admitted
    before it reads and refuses more.

    Args:
        decode: records -> logits (rows in the same order), called on the decoder thread.
        max_batch: most images per ``decode`` call (a larger single request is decoded alone).
        batch_timeout: how long a batch that is not full waits for more images (seconds).
        max_queue: most images admitted and waiting; a request that does not fit gets
            :class:`OverloadedError` at once.
        max_wait: a request still waiting after this many seconds gets :class:`OverloadedError`
            and is never decoded (``None``: no deadline).
        metrics: where queue depth, batch sizes and latencies are recorded (optional).
        loop_nice: how much the event loop's thread lowers its scheduling priority below the decoder's
            when serving starts (Linux nice; 0: equal).
    """

    def __init__(self, decode, max_batch: int = DEFAULT_MAX_BATCH, batch_timeout: float = DEFAULT_BATCH_TIMEOUT,
                 max_queue: int = DEFAULT_MAX_QUEUE, max_wait: float | None = DEFAULT_MAX_WAIT,
                 metrics: ServeMetrics | None = None, loop_nice: int = DEFAULT_LOOP_NICE) -> None:  # fmt: skip
        if max_batch < 1 or max_queue < 1 or batch_timeout < 0 or (max_wait is not None and max_wait <= 0):
            raise ConfigError(f"max_batch and max_queue must be >= 1, batch_timeout >= 0 and max_wait > 0; got "
                              f"{max_batch}, {max_queue}, {batch_timeout}, {max_wait}")  # fmt: skip
        if not 0 <= loop_nice <= 19:
            raise ConfigError(f"loop_nice must be in 0..19 (a Linux nice value), got {loop_nice}")
        self.decode, self.max_batch, self.batch_timeout = decode, max_batch, batch_timeout
        self.max_queue, self.max_wait, self.metrics, self.loop_nice = max_queue, max_wait, metrics, loop_nice
        self.jobs: collections.deque[_Job] = collections.deque()
        self.queued_images = 0
        self.batches = 0
        self.rejected = {"queue_full": 0, "deadline": 0}
        self._seconds_per_image = 0.0  # moving average of compute time, for Retry-After
        self._refused: collections.OrderedDict = collections.OrderedDict()  # client -> when it was told to come back
        self._cond = threading.Condition()  # guards jobs, queued_images and each job's started
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    def _set_depth(self, delta: int) -> None:
        self.queued_images += delta
        if self.metrics:
            self.metrics.queue_images.set(self.queued_images)

    def _reject(self, reason: str, message: str, client=None) -> OverloadedError:
        self.rejected[reason] += 1
        if self.metrics:
            self.metrics.rejected.labels(reason).inc()
        # Retry-After: the time to serve what waits now and every refused client not yet due back (each
        # client once, however often it was refused: one that ignores Retry-After is not a crowd), so that a
        # crowd of refused clients is spread over the time their requests need, each behind those told before.
        now = time.monotonic()
        key = client if client is not None else object()
        self._refused.pop(key, None)
        while self._refused and next(iter(self._refused.values())) <= now:  # the earliest told: due back now
            self._refused.popitem(last=False)
        drain = (self.queued_images + len(self._refused) + 1) * self._seconds_per_image
        retry_after = max(1, min(60, math.ceil(drain)))
        self._refused[key] = now + retry_after
        return OverloadedError(message, retry_after=retry_after)

    def queue_full_error(self, client=None) -> OverloadedError:
        """The 503 for a full queue; ``client``: the ASGI scope's (host, port), to count refused clients once."""
        return self._reject("queue_full", f"the queue is full ({self.queued_images} images waiting, room for "
                                          f"{self.max_queue}); retry later", client)  # fmt: skip

    async def submit(self, records: list, client=None) -> tuple:
        """``(logits rows, {"queue_s", "compute_s"})`` of these records; OverloadedError when refused."""
        n = len(records)
        loop = asyncio.get_running_loop()
        job = _Job(records, loop.create_future(), time.monotonic())
        with self._cond:
            admitted = self.queued_images + n <= self.max_queue
            if admitted:
                self.jobs.append(job)
                self._set_depth(n)
                self._cond.notify()
        if not admitted:
            raise self.queue_full_error(client)
        if self.max_wait is not None:  # answered by the decoder before it fires: cancelled in _settle
            job.timer = loop.call_later(self.max_wait, self._expire, job)
        rows = await job.future
        return rows, job.timing

    def _expire(self, job: _Job) -> None:
        """A job that waited past ``max_wait`` leaves the queue unanswered by the decoder."""
        with self._cond:
            if job.started is not None or job.future.done():
                return
            self.jobs.remove(job)
            self._set_depth(-len(job.records))
        job.future.set_exception(self._reject("deadline", f"the request waited over {self.max_wait * 1000:.0f} ms "
                                                          "for the decoder; retry later"))  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        """A FastAPI lifespan: the decoder thread runs while the application does.

        Serving starts with the heap frozen (``gc.freeze``): the modules and the model loaded by then (about
        150,000 objects for an ONNX server) are never scanned again by the cycle collector. A full collection
        comes every few thousand requests; over them it stopped the event loop (and every request in flight)
        for 383 ms in one run of ``bench/serve_load.py`` on a busy machine, and for 16 ms with the heap frozen
        (the bench records each level's ``gc_full_pause_ms`` from ``taskcodec_gc_pause_seconds``).
        """
        self._loop, self._stopping = asyncio.get_running_loop(), False
        gc.collect()
        gc.freeze()
        if self.metrics:
            gc.callbacks.append(self.metrics.on_gc)
        threading.Thread(target=self._work, name="taskcodec-decoder", daemon=True).start()
        lower_thread_priority(self.loop_nice)  # the decoder thread, started already, keeps its priority
        try:
            yield
        finally:
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
            if self.metrics and self.metrics.on_gc in gc.callbacks:
                gc.callbacks.remove(self.metrics.on_gc)
            gc.unfreeze()

    def _take(self, jobs: list[_Job], count: int) -> int:
        """Move jobs from the queue into the batch while they fit; returns the batch's image count."""
        now = time.monotonic()
        while self.jobs and count < self.max_batch:
            job = self.jobs[0]
            if jobs and count + len(job.records) > self.max_batch:
                break
            self.jobs.popleft()
            job.started = now
            self._set_depth(-len(job.records))
            jobs.append(job)
            count += len(job.records)
        return count

    def _next_batch(self) -> list[_Job] | None:
        """On the decoder thread: the next batch (waiting up to ``batch_timeout`` to fill it); None when stopping."""
        jobs: list[_Job] = []
        count, deadline = 0, None
        with self._cond:
            while not self._stopping:
                count = self._take(jobs, count)
                if count >= self.max_batch or (jobs and self.jobs):  # full, or the next job does not fit
                    return jobs
                if not jobs:
                    self._cond.wait()
                    continue
                deadline = deadline or time.monotonic() + self.batch_timeout
                if time.monotonic() >= deadline:
                    return jobs
                self._cond.wait(deadline - time.monotonic())
        return None

    def _work(self) -> None:
        while (jobs := self._next_batch()) is not None:
            records = [r for j in jobs for r in j.records]
            start = time.perf_counter()
            try:
                logits = self.decode(records)
            except Exception as e:  # a bad record fails its batch: retry each job alone so others still succeed
                answers = []
                for j in jobs if len(jobs) > 1 else []:
                    start = time.perf_counter()
                    try:
                        answers.append((j, self.decode(j.records), None, time.perf_counter() - start))
                    except Exception as e2:  # noqa: BLE001
                        answers.append((j, None, e2, 0.0))
                self._loop.call_soon_threadsafe(self._settle, answers or [(jobs[0], None, e, 0.0)])
                continue
            compute = time.perf_counter() - start
            self.batches += 1
            self._seconds_per_image = 0.8 * self._seconds_per_image + 0.2 * compute / len(records)
            if self.metrics:
                self.metrics.batch_images.observe(len(records))
            answers, offset = [], 0
            for j in jobs:
                answers.append((j, logits[offset : offset + len(j.records)], None, compute))
                offset += len(j.records)
            self._loop.call_soon_threadsafe(self._settle, answers)

    def _settle(self, answers: list) -> None:
        """On the event loop: each job of a decoded batch gets its rows (or its error)."""
        for job, rows, error, compute in answers:
            if job.timer is not None:
                job.timer.cancel()
            if job.future.done():  # its client went away
                continue
            if error is not None:
                job.future.set_exception(error)
                continue
            job.timing.update(queue_s=job.started - job.enqueued, compute_s=compute)
            if self.metrics:
                self.metrics.queue_seconds.observe(job.timing["queue_s"])
                self.metrics.compute_seconds.observe(compute)
            job.future.set_result(rows)


class ShedWhenFull:
    """ASGI middleware: a classify request arriving while the queue is full gets its 503 before any other work.

    It answers before FastAPI routes the request or its body is read, so a refusal costs the event loop a
    fraction of what a request through the endpoint does, and an overloaded server spends its CPU on the
    requests it admitted (a request that would not fit a queue with room left is still refused by the
    endpoint, after reading its body).
    """

    def __init__(self, app, batcher: Batcher, answered) -> None:
        self.app, self.batcher, self.answered = app, batcher, answered

    async def __call__(self, scope, receive, send) -> None:
        b = self.batcher
        if scope["type"] != "http" or scope["path"] != "/v1/classify" or b.queued_images < b.max_queue:
            return await self.app(scope, receive, send)
        e = b.queue_full_error(scope.get("client"))
        body = json.dumps({"error": str(e)}).encode()
        self.answered(503)
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"retry-after", str(e.retry_after).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})
