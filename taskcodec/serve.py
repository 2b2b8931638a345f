"""``taskcodec serve -m decoder-<id>.pt``: the classifying HTTP endpoint, with dynamic batching.

    POST /v1/classify?topk=K   body: one container (``taskcodec compress`` output, one image or many)
                               -> {"model": id, "images": n, "results": [{"name", "top": [...]}, ...]}
    GET  /health               -> {"status": "ok", "model": id, "requests": n, "errors": n, "images": n}
    GET  /                     the page: a photo coded in the browser, sent, labelled (taskcodec/web/)

Built on FastAPI + uvicorn. Why not LitServe: it batches *requests* of JSON payloads, while a
taskcodec request is a binary container of any number of images; what should be batched is the
images. So every request's records join one queue, and a single batcher task decodes up to
``max_batch`` records at a time (waiting at most ``batch_timeout`` for more), off the event loop,
and hands each request its rows back.

Hostile requests get a 4xx with the error's message and never take the server down: a body over
``max_body`` bytes (413, read no further), more than ``max_images`` images (413), a container of
another model (409), and truncated or garbage data (400). Anything else is counted as an error and
answered 500 with a message; the server keeps serving.
"""

# no `from __future__ import annotations` here: FastAPI reads the endpoint's annotations at definition
# time, and Request is imported inside create_app (the module imports without fastapi installed)
import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field

from taskcodec.errors import BitstreamError, ConfigError, TaskcodecError

DEFAULT_MAX_BODY = 1 << 20
DEFAULT_MAX_IMAGES = 256


@dataclass
class _Job:
    records: list[bytes]
    future: asyncio.Future
    rows: list = field(default_factory=list)


class Batcher:
    """Collects records from concurrent requests and decodes them in batches on one worker thread."""

    def __init__(self, decode, max_batch: int = 64, batch_timeout: float = 0.005) -> None:
        self.decode, self.max_batch, self.batch_timeout = decode, max_batch, batch_timeout
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.batches = 0

    async def submit(self, records: "list[bytes]"):
        job = _Job(records, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        """A FastAPI lifespan: the batcher runs while the application does."""
        task = asyncio.create_task(self.run())
        yield
        task.cancel()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            count = len(jobs[0].records)
            deadline = loop.time() + self.batch_timeout
            while count < self.max_batch:
                try:
                    job = await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    break
                jobs.append(job)
                count += len(job.records)
            records = [r for j in jobs for r in j.records]
            try:
                logits = await loop.run_in_executor(None, self.decode, records)
            except Exception as e:  # a bad record fails its batch: retry each job alone so others still succeed
                if len(jobs) == 1:
                    jobs[0].future.set_exception(e)
                    continue
                for j in jobs:
                    try:
                        j.future.set_result(await loop.run_in_executor(None, self.decode, j.records))
                    except Exception as e2:  # noqa: BLE001
                        j.future.set_exception(e2)
                continue
            self.batches += 1
            start = 0
            for j in jobs:
                j.future.set_result(logits[start : start + len(j.records)])
                start += len(j.records)


def create_app(decoder_path: str | os.PathLike, max_body: int = DEFAULT_MAX_BODY, max_images: int = DEFAULT_MAX_IMAGES,
               max_batch: int = 64, batch_timeout: float = 0.005, threads: int | None = None,
               client: str | os.PathLike | None = None, results_table: str | os.PathLike | None = None):  # fmt: skip
    """The FastAPI application serving one exported decoder, and the page at ``/`` (:mod:`taskcodec.web`)."""
    import torch
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from taskcodec.batching import decode_records
    from taskcodec.container import read_container
    from taskcodec.export import load_decoder
    from taskcodec.report import label_rows

    if max_body < 1 or max_images < 1 or max_batch < 1 or batch_timeout < 0:
        raise ConfigError("max_body, max_images and max_batch must be >= 1 and batch_timeout >= 0")
    if threads:
        torch.set_num_threads(threads)
    codec, meta = load_decoder(decoder_path)
    codec_id = meta["codec_id"]
    stats = {"requests": 0, "errors": 0, "images": 0, "started": time.time()}

    def decode(records: list[bytes]):
        with torch.no_grad():
            return decode_records(codec, records, max_batch)

    batcher = Batcher(decode, max_batch, batch_timeout)
    app = FastAPI(title="taskcodec", lifespan=batcher.lifespan)
    from taskcodec.web import mount_web

    mount_web(app, decoder_path, codec_id, client, results_table, max_body)

    def refuse(status: int, message: str) -> JSONResponse:
        stats["errors"] += 1
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": codec_id, "family": meta["family"], "batches": batcher.batches,
                **{k: stats[k] for k in ("requests", "errors", "images")},
                "uptime_s": round(time.time() - stats["started"], 1)}  # fmt: skip

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
        if not 1 <= topk <= 100:
            return refuse(400, f"topk must be in 1..100, got {topk}")
        if n == 0:
            return {"model": codec_id, "images": 0, "results": []}
        try:
            logits = await batcher.submit([e.record for e in container.entries])
        except BitstreamError as e:
            return refuse(400, str(e))
        except Exception as e:  # noqa: BLE001  (the server stays up; the client learns what happened)
            return refuse(500, f"internal error: {type(e).__name__}: {e}")
        stats["images"] += n
        rows = label_rows([{"name": e.name} for e in container.entries], logits, meta, topk)
        return {"model": codec_id, "images": n, "results": rows}

    return app


def serve(decoder_path: str, host: str = "127.0.0.1", port: int = 8000, **kwargs) -> None:
    """Run the endpoint with uvicorn until interrupted."""
    try:
        import uvicorn
    except ImportError as e:
        raise ConfigError('`taskcodec serve` needs fastapi and uvicorn: pip install "taskcodec[serve]"') from e
    uvicorn.run(create_app(decoder_path, **kwargs), host=host, port=port, log_level="warning")


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
