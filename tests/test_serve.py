"""`taskcodec serve`: real HTTP requests on 127.0.0.1, dynamic batching, hostile requests answered 4xx."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from tiny_codec import CLASS_NAMES, CLASS_WORDS, SAMPLE, export_tiny

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from taskcodec.cli import main  # noqa: E402
from taskcodec.container import read_container, write_container  # noqa: E402
from taskcodec.serve import create_app, serve_in_thread  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    _, enc, dec = export_tiny(tmp / "m")
    _, enc2, _ = export_tiny(tmp / "other", "split", downsample=1)
    app = create_app(dec, max_body=20_000, max_images=8, max_batch=16, batch_timeout=0.01, max_wait=None)
    url, stop = serve_in_thread(app)
    images = sorted(SAMPLE.rglob("*.JPEG"))[:6]
    assert main(["compress", *map(str, images), "-m", str(enc), "-o", str(tmp / "all.tca"), "--archive", "-q"]) == 0
    assert main(["compress", str(images[0]), "-m", str(enc2), "-o", str(tmp / "other.tca"), "--archive", "-q"]) == 0
    yield {"url": url, "all": (tmp / "all.tca").read_bytes(), "other": (tmp / "other.tca").read_bytes(), "dec": dec}
    stop()


def test_classifies_like_the_cli(server, capsys) -> None:
    r = httpx.post(f"{server['url']}/v1/classify", params={"topk": 2}, content=server["all"], timeout=30)
    assert r.status_code == 200
    body = r.json()
    n = len(read_container(server["all"]).entries)
    assert body["images"] == n and len(body["results"]) == n and len(body["results"][0]["top"]) == 2
    assert {t["words"] for row in body["results"] for t in row["top"]} <= set(CLASS_WORDS)
    import json
    from pathlib import Path
    tmp = Path(server["dec"]).parent / "x.tca"
    tmp.write_bytes(server["all"])
    capsys.readouterr()
    assert main(["classify", str(tmp), "-m", str(server["dec"]), "--format", "json", "--topk", "2"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert [[t["class"] for t in row["top"]] for row in cli] == [[t["class"] for t in row["top"]] for row in body["results"]]


def test_concurrent_requests_are_batched_and_all_answered(server) -> None:
    entries = read_container(server["all"]).entries
    singles = [write_container([e], read_container(server["all"]).codec_id) for e in entries] * 4

    def post(data: bytes) -> list[int]:
        r = httpx.post(f"{server['url']}/v1/classify", content=data, timeout=60)
        assert r.status_code == 200
        return [row["top"][0]["class"] for row in r.json()["results"]]

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(post, singles))
    whole = httpx.post(f"{server['url']}/v1/classify", content=server["all"], timeout=30).json()
    expect = [row["top"][0]["class"] for row in whole["results"]]
    assert [g[0] for g in got] == expect * 4  # every request answered, each with its own image's label
    health = httpx.get(f"{server['url']}/health").json()
    assert health["batches"] < health["requests"]  # requests shared decoder calls


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [("too_big", 413, "over the limit"), ("garbage", 400, "not a taskcodec container"), ("truncated", 400, "truncated"),
     ("other_model", 409, "made by model"), ("too_many", 413, "images in one request")],
)  # fmt: skip
def test_hostile_requests_get_4xx_and_the_server_stays_up(server, case, status, message) -> None:
    entries = read_container(server["all"]).entries
    codec_id = read_container(server["all"]).codec_id
    body = {
        "too_big": b"\0" * 30_000,
        "garbage": b"GIF89a" + b"\x01" * 100,
        "truncated": server["all"][: len(server["all"]) // 2],
        "other_model": server["other"],
        "too_many": write_container(entries[:1] * 9, codec_id),
    }[case]
    before = httpx.get(f"{server['url']}/health").json()["errors"]
    r = httpx.post(f"{server['url']}/v1/classify", content=body, timeout=30)
    assert r.status_code == status and message in r.json()["error"]
    health = httpx.get(f"{server['url']}/health").json()
    assert health["status"] == "ok" and health["errors"] == before + 1
    assert httpx.post(f"{server['url']}/v1/classify", content=server["all"], timeout=30).status_code == 200
    assert CLASS_NAMES  # the export's class names are what the server reports
