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
import json
import os
import threading
import time

from taskcodec.admission import (
    DEFAULT_BATCH_TIMEOUT,
    DEFAULT_LOOP_NICE,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_WAIT,
    Batcher,
    ServeMetrics,
    ShedWhenFull,
)
from taskcodec.errors import BitstreamError, CheckpointError, ConfigError, OverloadedError, TaskcodecError

DEFAULT_MAX_BODY = 1 << 20
DEFAULT_MAX_IMAGES = 256
#: seconds an idle keep-alive connection stays open (uvicorn's default is 5): longer than the longest
#: Retry-After (60 s) a client may be told, times its jitter, mostly, so that a refused client comes back on its
#: connection instead of reopening one, and the server does not close it just as the client sends again
KEEP_ALIVE_S = 75
#: environment variable carrying create_app's arguments to each worker process (``--workers N``)
CONFIG_ENV = "TASKCODEC_SERVE_CONFIG"


def create_app(model, max_body: int = DEFAULT_MAX_BODY, max_images: int = DEFAULT_MAX_IMAGES,
               max_batch: int = DEFAULT_MAX_BATCH, batch_timeout: float = DEFAULT_BATCH_TIMEOUT,
               threads: int | None = None, max_queue: int = DEFAULT_MAX_QUEUE,
               max_wait: float | None = DEFAULT_MAX_WAIT, client: str | os.PathLike | None = None,
               results_table: str | os.PathLike | None = None, loop_nice: int = DEFAULT_LOOP_NICE):  # fmt: skip
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
    batcher = Batcher(None, max_batch, batch_timeout, max_queue, max_wait, metrics, loop_nice)  # checks its arguments first
    model_path = model if isinstance(model, (str, os.PathLike)) else None  # the page's client is found beside it
    if model_path is not None:
        model = load_server_model(model, threads)
    if hasattr(model, "warm_up"):  # the first request should not pay for loading the coder's kernels
        model.warm_up()
    batcher.decode = model.decode
    codec_id, meta = model.codec_id, model.meta
    stats = {"requests": 0, "errors": 0, "images": 0, "started": time.time()}
    app = FastAPI(title="taskcodec", lifespan=batcher.lifespan)
    app.add_middleware(ShedWhenFull, batcher=batcher, answered=lambda s: metrics.responses.labels(str(s)).inc())
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
            logits, timing = await batcher.submit([e.record for e in container.entries], request.client)
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


def connection_limit(max_connections: int | None, max_queue: int = DEFAULT_MAX_QUEUE) -> int:
    """uvicorn's ``limit_concurrency``: the given one, or 4x the queue (at least 1024) so that it only stops floods.

    Past it uvicorn answers 503 (without ``Retry-After``) and closes the connection before the request
    reaches the application, so a flood of connections cannot exhaust memory or file descriptors; below
    it the queue and its deadline decide, with ``Retry-After``.
    """
    limit = max(1024, 4 * max_queue) if max_connections is None else max_connections
    if limit < 1:
        raise ConfigError(f"--max-connections must be >= 1, got {limit}")
    return limit


def uvicorn_limits(max_connections: int | None = None, max_queue: int = DEFAULT_MAX_QUEUE, backlog: int = 2048) -> dict:
    """The connection settings every server of this app runs with in uvicorn: ``limit_concurrency``
    (:func:`connection_limit`), the kernel's accept ``backlog`` (listen(2)) and the keep-alive timeout."""
    if backlog < 1:
        raise ConfigError(f"--backlog must be >= 1, got {backlog}")
    return {"limit_concurrency": connection_limit(max_connections, max_queue), "backlog": backlog,
            "timeout_keep_alive": KEEP_ALIVE_S}  # fmt: skip


def serve(model_path: str, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          max_connections: int | None = None, backlog: int = 2048, **kwargs) -> None:  # fmt: skip
    """Run the endpoint with uvicorn until interrupted (``workers`` > 1: that many processes on one socket).

    ``max_connections`` and ``backlog``: see :func:`uvicorn_limits` (per worker).
    """
    try:
        import uvicorn
    except ImportError as e:
        raise ConfigError('`taskcodec serve` needs fastapi and uvicorn: pip install "taskcodec[serve]"') from e
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    limits = uvicorn_limits(max_connections, kwargs.get("max_queue", DEFAULT_MAX_QUEUE), backlog)
    if workers == 1:
        uvicorn.run(create_app(model_path, **kwargs), host=host, port=port, log_level="warning", **limits)
        return
    if not os.path.isfile(model_path):  # the supervisor loads no model: only the workers hold one
        raise CheckpointError(f"{model_path} is not a file; pass a server-<id>.onnx or decoder-<id>.pt")
    Batcher(None, **{k: kwargs[k] for k in ("max_batch", "batch_timeout", "max_queue", "max_wait", "loop_nice") if k in kwargs})
    os.environ[CONFIG_ENV] = json.dumps({"model": str(model_path), **kwargs})
    uvicorn.run("taskcodec.serve:app_from_environment", factory=True, workers=workers, host=host, port=port,
                log_level="warning", **limits)  # fmt: skip


def serve_in_thread(app, timeout: float = 20.0, **config):
    """Run ``app`` with uvicorn on 127.0.0.1 (an ephemeral port) in a daemon thread, for tests and benches.

    ``config``: more ``uvicorn.Config`` arguments (e.g. ``limit_concurrency``). Returns ``(url, stop)``;
    ``stop()`` shuts the server down and waits for the thread.
    """
    import socket
    import urllib.request

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", **config))
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
