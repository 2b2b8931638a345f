"""The page in a real browser: headless Chromium (Debian's) opens ``taskcodec serve``'s ``/`` and codes photos.

The container the page POSTs must be byte-identical to ``taskcodec compress`` of the same file with
the same export, and the label it shows the server's. Bad input gets a message and the page goes on.
Needs Chromium, the ``playwright`` package (it drives the system Chromium; no browser is downloaded)
and onnxruntime-web from ``npm ci`` in taskcodec/web/; without them these tests skip, except where
``TASKCODEC_REQUIRE_BROWSER=1`` (``.ci/run``) makes a missing one a failure.
``TASKCODEC_WEB_SCREENSHOT=docs/web.png`` also writes the screenshot docs/web.md shows.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import sys
import threading
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_codec import CLASS_NAMES, CLASS_WORDS, SAMPLE, tiny_codec

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
REQUIRED = os.environ.get("TASKCODEC_REQUIRE_BROWSER") == "1"
CHROMIUM = os.environ.get("TASKCODEC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _need(ok: bool, why: str) -> None:
    if not ok:
        (pytest.fail if REQUIRED else pytest.skip)(why)


@pytest.fixture(scope="module")
def browser():
    _need(CHROMIUM is not None, "no chromium on PATH (apt-get install chromium)")
    _need((ROOT / "taskcodec/web/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs").is_file(),
          "onnxruntime-web is not installed: npm ci --ignore-scripts --prefix taskcodec/web")  # fmt: skip
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "the playwright package is not installed (pip install -e .[dev])")
    with sync_playwright() as p:
        # a fake camera (Chromium's test pattern) that needs no permission prompt, for the camera test
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--use-fake-device-for-media-stream",
                                                              "--use-fake-ui-for-media-stream"])  # fmt: skip
        yield b
        b.close()


def _export(out: Path, seed_scale: float = 30.0) -> dict:
    from taskcodec.cli import main
    from taskcodec.export import export_codec
    from taskcodec.preprocessing import preprocessing_config

    codec = tiny_codec("light", entropy="factorized", channels=[8, 8], act="gdn")
    if seed_scale != 30.0:  # another model: other weights, so another id
        import torch

        with torch.no_grad():
            next(codec.g_a.parameters()).mul_(seed_scale)
        codec.update(force=True)
    meta = {"lmbda": 1.0, "class_names": CLASS_NAMES, "class_words": CLASS_WORDS, "preprocessing": preprocessing_config(64, 64)}
    enc, dec = export_codec(codec, out, meta)
    assert main(["export", str(enc), "--onnx", "-q"]) == 0
    return {"enc": enc, "dec": dec, "onnx": next(out.glob("client-*.onnx")), "dir": out}


class LiveServer:
    """``taskcodec serve``'s app under uvicorn on one port that can be stopped and started again.

    Each start builds a new app (as a restarted ``taskcodec serve`` would): an app's batcher queue
    belongs to the event loop that first ran it.
    """

    def __init__(self, make_app) -> None:
        self.make_app = make_app
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = self.thread = None

    def start(self) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(self.make_app(), host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(400):
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=1.0).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"the server on {self.url} did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from taskcodec.serve import create_app

    tmp = tmp_path_factory.mktemp("web")
    model, other = _export(tmp / "model"), _export(tmp / "other", seed_scale=0.5)
    assert model["onnx"].name != other["onnx"].name
    table = ROOT / "results" / "baselines_10cls" / "rate_accuracy.csv"
    server = LiveServer(lambda: create_app(model["dec"], max_body=20_000, results_table=table))
    server.start()
    yield {"model": model, "other": other, "server": server, "tmp": tmp}
    server.stop()


@pytest.fixture
def page(browser, site):
    page = browser.new_page(viewport={"width": 960, "height": 760})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(site["server"].url + "/")
    page.wait_for_selector("body[data-state=ready]", timeout=180_000)
    yield page
    page.close()
    assert not errors, errors  # no uncaught exception in the page, whatever the test did


def _code(page, path: Path, expect: str = "done") -> None:
    runs = page.get_attribute("body", "data-runs") or "0"
    page.set_input_files("#file", str(path))
    if expect == "done":
        page.wait_for_function(f"(document.body.dataset.runs || '0') !== '{runs}'", timeout=180_000)
    else:
        page.wait_for_selector(f"body[data-state={expect}]", timeout=180_000)


def _compress(site, path: Path, tmp: Path) -> bytes:
    from taskcodec.cli import main

    out = tmp / "tc"
    assert main(["compress", str(path), "-m", str(site["model"]["enc"]), "-o", str(out), "-q"]) == 0
    return (out / f"{path.name}.tc").read_bytes()


def _photos(tmp: Path) -> list[Path]:
    """The input size exactly (no resampling), a larger non-square photo (Pillow's bicubic + crop) and a JPEG."""
    jpeg = sorted(SAMPLE.rglob("*.JPEG"))[0]
    square = tmp / "square.png"
    Image.open(jpeg).convert("RGB").save(square)
    wide = tmp / "wide.png"
    rng = np.random.RandomState(0)
    big = np.asarray(Image.open(jpeg).convert("RGB").resize((131, 97), Image.Resampling.BILINEAR)).astype(int)
    Image.fromarray(np.clip(big + rng.randint(-20, 21, big.shape), 0, 255).astype(np.uint8)).save(wide)
    return [square, wide, jpeg]


def test_the_page_sends_what_taskcodec_compress_writes_and_shows_the_servers_label(page, site, tmp_path) -> None:
    from taskcodec.container import read_container

    for photo in _photos(tmp_path):
        with page.expect_request("**/v1/classify*") as request:
            _code(page, photo)
        sent = request.value.post_data_buffer
        expected = _compress(site, photo, tmp_path / photo.stem)
        assert sent == expected, f"{photo.name}: the page sent {sent.hex()}, taskcodec compress wrote {expected.hex()}"
        assert read_container(sent).codec_id == site["model"]["dec"].stem.split("-")[1]
        answer = json.loads(urllib.request.urlopen(urllib.request.Request(
            site["server"].url + "/v1/classify?topk=5", data=expected, method="POST")).read())  # fmt: skip
        top = answer["results"][0]["top"][0]
        assert page.inner_text("#labels li:first-child .label") == f"{top['words']} ({top['name']})"
        assert page.inner_text("#bytes-sent") == f"{len(expected):,} B"
        assert page.is_hidden("#message")
    assert "quality 75" in page.inner_text("#jpeg-label")  # the lowest quality reaching the reference in the table
    assert page.inner_text("#bytes-jpeg").endswith("B") and "ms" in page.inner_text("#time-encode")
    shot = tmp_path / "web.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("TASKCODEC_WEB_SCREENSHOT"):
        shutil.copy(shot, ROOT / os.environ["TASKCODEC_WEB_SCREENSHOT"])


def test_the_browser_runs_the_coder_golden_vectors(page) -> None:
    golden = json.loads((ROOT / "tests" / "web" / "golden.json").read_text())
    failures = page.evaluate(
        """async (golden) => {
            const { RangeEncoder, packRecord, writeContainer } = await import('/web/coder.js');
            const { preprocess } = await import('/web/preprocess.js');
            const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
            const bytes = (h) => Uint8Array.from(h.match(/../g) || [], (x) => parseInt(x, 16));
            const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
            const bad = [];
            for (const c of golden.coder) {
                const enc = new RangeEncoder();
                for (const s of c.segments) enc.encodeWithIndexes(s.symbols, s.indexes, c.cdfs, c.cdf_lengths, c.offsets);
                if (hex(enc.flush()) !== c.bytes) bad.push(c.name);
            }
            for (const c of golden.containers) {
                const got = c.kind === 'record' ? packRecord(c.height, c.width, bytes(c.payload))
                    : writeContainer(c.entries.map((e) => ({ ...e, record: bytes(e.record) })), c.codec_id);
                if (hex(got) !== c.bytes) bad.push(`${c.kind} ${c.bytes.slice(0, 16)}`);
            }
            for (const c of golden.preprocess) {
                const got = preprocess(b64(c.rgb), c.width, c.height, c.out_width, c.out_height, c.crop_pct);
                if (hex(got) !== hex(b64(c.expected))) bad.push(`preprocess ${c.width}x${c.height}`);
            }
            return [bad, golden.coder.length];
        }""",
        golden,
    )
    assert failures == [[], len(golden["coder"])]


def test_a_camera_photo_is_coded_and_labelled(page, site) -> None:
    from taskcodec.container import read_container

    page.click("#camera-open")
    page.wait_for_function("document.getElementById('video').videoWidth > 0", timeout=180_000)
    with page.expect_request("**/v1/classify*") as request:
        page.click("#camera-shoot")
        page.wait_for_function("(document.body.dataset.runs || '0') !== '0'", timeout=180_000)
    sent = request.value.post_data_buffer
    assert len(read_container(sent).entries) == 1 and page.is_hidden("#camera")
    answer = json.loads(urllib.request.urlopen(urllib.request.Request(
        site["server"].url + "/v1/classify?topk=5", data=sent, method="POST")).read())  # fmt: skip
    top = answer["results"][0]["top"][0]
    assert page.inner_text("#labels li:first-child .label") == f"{top['words']} ({top['name']})"


def _huge_png(path: Path, side: int = 20_000) -> None:
    """A real, valid 20,000 x 20,000 black PNG (about 1 MB: zlib folds the zero rows)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * side)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.mark.parametrize("case", ["not an image", "20000x20000", "server down", "503", "other model"])
def test_bad_input_gets_a_clear_message_and_the_page_keeps_working(page, site, tmp_path, case) -> None:
    photo = _photos(tmp_path)[0]
    server = site["server"]
    if case == "not an image":
        bad = tmp_path / "notes.txt"
        bad.write_text("this is not a photo\n")
        _code(page, bad, expect="error")
        message = "is not an image this browser can read"
    elif case == "20000x20000":
        bad = tmp_path / "huge.png"
        _huge_png(bad)
        _code(page, bad, expect="error")
        message = "20,000×20,000 = 400.0 Mpx, over this page's limit"
    elif case == "server down":
        server.stop()
        try:
            _code(page, photo, expect="error")
        finally:
            server.start()
        message = "Cannot reach the server"
    elif case == "503":
        page.route("**/v1/classify*", lambda route: route.fulfill(status=503, json={"error": "the queue is full"}))
        _code(page, photo, expect="error")
        page.unroute("**/v1/classify*")
        message = "The server is busy (503: the queue is full)"
    else:  # the page holds another model's client (the server was restarted with another model since it loaded)
        other = site["other"]["onnx"]
        from taskcodec.web import client_manifest

        manifest = {"model": other.stem.split("-")[1], "max_pixels": 4096 * 4096, "jpeg_peer": None, "runtime_installed": True,
                    "client": client_manifest(other)}  # fmt: skip
        page.route("**/web/client.json", lambda route: route.fulfill(json=manifest))
        page.route("**/web/client.onnx", lambda route: route.fulfill(body=other.read_bytes()))
        page.reload()
        page.wait_for_selector("body[data-state=ready]", timeout=180_000)
        _code(page, photo, expect="error")
        page.unroute("**/web/client.json")
        page.unroute("**/web/client.onnx")
        text = page.inner_text("#message")
        assert "reload the page" in text and site["model"]["dec"].stem.split("-")[1] in text, text
        page.reload()  # what the message asks for
        page.wait_for_selector("body[data-state=ready]", timeout=180_000)
        message = None
    if message is not None:
        assert message in page.inner_text("#message"), page.inner_text("#message")
    _code(page, photo)  # the next photo goes through
    assert page.is_hidden("#message") and page.inner_text("#bytes-sent").endswith(" B")


def test_a_server_without_a_client_says_how_to_make_one(browser, site, tmp_path) -> None:
    from taskcodec.serve import create_app

    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(site["model"]["dec"], alone)
    server = LiveServer(lambda: create_app(alone / site["model"]["dec"].name))
    server.start()
    page = browser.new_page()
    try:
        page.goto(server.url + "/")
        page.wait_for_selector("body[data-state=unavailable]", timeout=180_000)
        assert "taskcodec export ENCODER --onnx" in page.inner_text("#message")
    finally:
        page.close()
        server.stop()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
