"""Admission control over real HTTP: a full queue answers 503 at once, a request past its deadline is
answered 503 and never computed, the server keeps serving afterwards, and /metrics reports it all.

The model here blocks inside ``decode`` until the test releases it, so the queue fills on purpose and
no assertion depends on timing.
"""

from __future__ import annotations

import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from taskcodec.bitstream import pack_record  # noqa: E402
from taskcodec.container import Entry, write_container  # noqa: E402
from taskcodec.errors import ConfigError  # noqa: E402
from taskcodec.serve import Batcher, create_app, serve_in_thread  # noqa: E402

CODEC_ID = "00112233aabbccdd"
WAIT = 60  # seconds a sync step may take on a loaded machine before the test gives up (not a speed check)


class GatedModel:
    """A ServerModel whose decode blocks until ``gate`` is set; logits say which record was decoded."""

    codec_id = CODEC_ID
    meta = {"family": "test", "class_names": ["a", "b", "c", "d"]}

    def __init__(self) -> None:
        self.gate, self.entered = threading.Event(), threading.Event()
        self.decoded: list[bytes] = []

    def decode(self, records: list[bytes]) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(WAIT)
        self.decoded += records
        logits = np.zeros((len(records), 4), np.float32)
        logits[np.arange(len(records)), [r[-1] % 4 for r in records]] = 1.0
        return logits


def body(k: int) -> bytes:
    """A one-image container whose record's last byte is ``k`` (the class GatedModel answers)."""
    return write_container([Entry(pack_record(64, 64, bytes([7, k])))], CODEC_ID)


def metric_values(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def wait_until(condition) -> None:
    done = threading.Event()
    for _ in range(WAIT * 20):
        if condition():
            return
        done.wait(0.05)
    raise AssertionError("the server never reached the expected state")


def test_full_queue_answers_503_at_once_and_the_server_keeps_serving() -> None:
    model = GatedModel()
    url, stop = serve_in_thread(create_app(model, max_batch=1, batch_timeout=0, max_queue=2, max_wait=None))
    try:
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(httpx.post, f"{url}/v1/classify", content=body(1), timeout=WAIT)
            assert model.entered.wait(WAIT)  # request 1 is being computed (and blocks there)
            queued = [pool.submit(httpx.post, f"{url}/v1/classify", content=body(k), timeout=WAIT) for k in (2, 3)]
            wait_until(lambda: httpx.get(f"{url}/health").json()["queue_images"] == 2)
            # the queue holds 2 images: the next request is refused while the decoder is still blocked
            r = httpx.post(f"{url}/v1/classify", content=body(0), timeout=WAIT)
            assert r.status_code == 503 and "queue is full" in r.json()["error"]
            assert int(r.headers["Retry-After"]) >= 1
            assert not first.done() and not any(q.done() for q in queued)
            model.gate.set()
            answers = [f.result() for f in (first, *queued)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert [a.json()["results"][0]["top"][0]["class"] for a in answers] == [1, 2, 3]
        assert "queue;dur=" in answers[0].headers["Server-Timing"]
        after = httpx.post(f"{url}/v1/classify", content=body(3), timeout=WAIT)
        assert after.status_code == 200 and after.json()["results"][0]["top"][0]["name"] == "d"
        health = httpx.get(f"{url}/health").json()
        assert health["rejected"] == {"queue_full": 1, "deadline": 0} and health["queue_images"] == 0

        scrape = httpx.get(f"{url}/metrics")
        assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
        values = metric_values(scrape.text)
        assert values[("taskcodec_responses_total", (("status", "200"),))] == 4
        assert values[("taskcodec_responses_total", (("status", "503"),))] == 1
        assert values[("taskcodec_rejected_total", (("reason", "queue_full"),))] == 1
        assert values[("taskcodec_queue_images", ())] == 0
        assert values[("taskcodec_batch_images_count", ())] == 4  # four decoder calls of one image each
        assert values[("taskcodec_queue_seconds_count", ())] == 4
        assert values[("taskcodec_compute_seconds_count", ())] == 4
        assert values[("taskcodec_images_total", ())] == 4
    finally:
        model.gate.set()
        stop()


def test_serving_freezes_the_startup_heap_and_times_collections() -> None:
    import gc

    assert gc.get_freeze_count() == 0
    url, stop = serve_in_thread(create_app(GatedModel()))
    try:
        assert gc.get_freeze_count() > 1000  # the modules and objects loaded before serving: never scanned again
        gc.collect()  # a full collection while serving is timed in /metrics
        values = metric_values(httpx.get(f"{url}/metrics").text)
        assert values[("taskcodec_gc_pause_seconds_count", (("generation", "2"),))] >= 1
    finally:
        stop()
    assert gc.get_freeze_count() == 0  # a server stopped in a longer-lived process hands them back


def test_a_request_past_its_deadline_is_answered_503_and_never_computed() -> None:
    model = GatedModel()
    url, stop = serve_in_thread(create_app(model, max_batch=1, batch_timeout=0, max_queue=8, max_wait=0.05))
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, f"{url}/v1/classify", content=body(1), timeout=WAIT)
            assert model.entered.wait(WAIT)
            # the decoder is blocked, so this request can only leave the queue by its deadline
            late = httpx.post(f"{url}/v1/classify", content=body(2), timeout=WAIT)
            assert late.status_code == 503 and "waited over 50 ms" in late.json()["error"]
            assert "Retry-After" in late.headers
            model.gate.set()
            assert first.result().status_code == 200
        assert httpx.post(f"{url}/v1/classify", content=body(3), timeout=WAIT).status_code == 200
        assert [r[-1] for r in model.decoded] == [1, 3]  # the late request's record was never decoded
        values = metric_values(httpx.get(f"{url}/metrics").text)
        assert values[("taskcodec_rejected_total", (("reason", "deadline"),))] == 1
        assert httpx.get(f"{url}/health").json()["queue_images"] == 0
    finally:
        model.gate.set()
        stop()


def test_a_request_larger_than_the_queue_is_refused_413() -> None:
    model = GatedModel()
    model.gate.set()
    url, stop = serve_in_thread(create_app(model, max_queue=2, max_wait=None))
    try:
        data = write_container([Entry(pack_record(64, 64, bytes([7, k]))) for k in range(3)], CODEC_ID)
        r = httpx.post(f"{url}/v1/classify", content=data, timeout=WAIT)
        assert r.status_code == 413 and "more than this server's queue holds" in r.json()["error"]
        assert httpx.post(f"{url}/v1/classify", content=body(1), timeout=WAIT).status_code == 200
    finally:
        stop()


@pytest.mark.parametrize("kwargs", [{"max_queue": 0}, {"max_batch": 0}, {"max_wait": 0}, {"batch_timeout": -1},
                                    {"loop_nice": -1}, {"loop_nice": 20}])
def test_bad_admission_settings_are_refused(kwargs) -> None:
    with pytest.raises(ConfigError, match="must be"):
        Batcher(None, **kwargs)


def test_bad_worker_settings_are_refused_before_any_process_starts(tmp_path) -> None:
    from taskcodec.errors import CheckpointError
    from taskcodec.serve import serve

    with pytest.raises(ConfigError, match="--workers must be >= 1"):
        serve(str(tmp_path / "server-x.onnx"), workers=0)
    with pytest.raises(CheckpointError, match="is not a file"):
        serve(str(tmp_path / "server-x.onnx"), workers=2)
    (tmp_path / "server-x.onnx").write_bytes(b"x")
    with pytest.raises(ConfigError, match="must be"):
        serve(str(tmp_path / "server-x.onnx"), workers=2, max_queue=0)


def test_a_full_queue_refuses_before_reading_the_body() -> None:
    """The refusal comes before the endpoint reads anything: a request whose body never arrives still gets its 503."""
    import socket
    from urllib.parse import urlparse

    model = GatedModel()
    url, stop = serve_in_thread(create_app(model, max_batch=1, batch_timeout=0, max_queue=1, max_wait=None))
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(httpx.post, f"{url}/v1/classify", content=body(1), timeout=WAIT)
            assert model.entered.wait(WAIT)
            queued = pool.submit(httpx.post, f"{url}/v1/classify", content=body(2), timeout=WAIT)
            wait_until(lambda: httpx.get(f"{url}/health").json()["queue_images"] == 1)
            address = urlparse(url)
            with socket.create_connection((address.hostname, address.port), timeout=WAIT) as sock:
                sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")  # no body follows
                answer = b""  # the head and the body may come in separate packets: read to the end of the body
                while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < int(
                    re.search(rb"(?i)content-length: *(\d+)", answer.partition(b"\r\n\r\n")[0]).group(1)
                ):
                    chunk = sock.recv(65536)
                    assert chunk, f"the server closed the connection mid-answer: {answer!r}"
                    answer += chunk
                answer = answer.decode("latin-1")
            assert answer.startswith("HTTP/1.1 503") and "retry-after:" in answer.lower() and "queue is full" in answer
            model.gate.set()
            assert first.result().status_code == 200 and queued.result().status_code == 200
        values = metric_values(httpx.get(f"{url}/metrics").text)
        assert values[("taskcodec_responses_total", (("status", "503"),))] == 1
        assert values[("taskcodec_rejected_total", (("reason", "queue_full"),))] == 1
    finally:
        model.gate.set()
        stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_the_event_loop_runs_below_the_decoders_priority() -> None:
    import asyncio
    import os

    seen: dict = {}

    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def decode(records: list[bytes]) -> np.ndarray:
        seen["decoder"] = nice()
        return np.zeros((len(records), 4), np.float32)

    async def serve_one() -> None:
        seen["before"] = nice()
        batcher = Batcher(decode, max_wait=None, loop_nice=5)
        async with batcher.lifespan(None):
            seen["loop"] = nice()
            rows, _ = await batcher.submit([b"x"])
            seen["rows"] = len(rows)

    thread = threading.Thread(target=asyncio.run, args=(serve_one(),))  # its own thread: the test's keeps its nice
    thread.start()
    thread.join(WAIT)
    assert seen["rows"] == 1
    assert seen["decoder"] == seen["before"] and seen["loop"] == min(19, seen["before"] + 5)


def test_the_connection_limit_and_backlog_reach_uvicorn(tmp_path, monkeypatch) -> None:
    import uvicorn

    from taskcodec.serve import connection_limit, serve

    assert connection_limit(None, 256) == 1024 and connection_limit(None, 1000) == 4000 and connection_limit(7) == 7
    with pytest.raises(ConfigError, match="--max-connections"):
        connection_limit(0)
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.append(kw))
    (tmp_path / "server-x.onnx").write_bytes(b"x")
    serve(str(tmp_path / "server-x.onnx"), workers=2, max_queue=512, backlog=64)
    assert calls[0]["limit_concurrency"] == 2048 and calls[0]["backlog"] == 64
    assert calls[0]["timeout_keep_alive"] == 75  # a client told to come back keeps its connection


def test_a_server_model_is_warmed_up_once_before_serving(monkeypatch) -> None:
    import uvicorn

    from taskcodec import server_model
    from taskcodec.serve import serve

    order = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: order.append("run"))
    model = GatedModel()
    model.warm_up = lambda: order.append("warm_up")
    monkeypatch.setattr(server_model, "load_server_model", lambda path, threads: model)
    serve("server-x.onnx", workers=1)
    assert order == ["warm_up", "run"]
    if sys.platform.startswith("linux"):  # glibc: the calls reach the C library
        assert server_model.release_free_memory() is True


def test_retry_after_spreads_a_crowd_of_refused_clients_but_not_one_impatient_client() -> None:
    """Retry-After is the time to serve what waits plus the refused clients not yet due back, each client
    counted once: a crowd is told to come back later, one client that ignores it is not."""
    b = Batcher(lambda records: None, max_batch=8, max_queue=8)
    b._seconds_per_image = 0.004  # as measured by the decoder: 4 ms an image
    b.queued_images = 8
    for _ in range(2000):  # one client hammering: 8 waiting + 1 client, far under a second
        e = b.queue_full_error(("127.0.0.1", 5000))
    assert e.retry_after == 1
    for port in range(1000):  # a crowd: 1,000 distinct clients refused -> (8 + 1,001) x 4 ms = 4.04 s
        e = b.queue_full_error(("127.0.0.1", 6000 + port))
    assert e.retry_after == 5
    # 2 s later the clients told 1-2 s are due back; the ~500 told 3-5 s are still away and ahead of a
    # newcomer: (8 + ~500 + 1) x 4 ms -> 3 s (a window of the last second would have said 1)
    b._refused = type(b._refused)((k, t - 2.0) for k, t in b._refused.items())
    assert b.queue_full_error(("127.0.0.1", 7000)).retry_after == 3
    b._refused = type(b._refused)((k, t - 10.0) for k, t in b._refused.items())  # all were due back: gone
    assert b.queue_full_error(("127.0.0.1", 5000)).retry_after == 1
    assert b.rejected["queue_full"] == 3002
