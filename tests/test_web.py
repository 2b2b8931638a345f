"""The page's server side (no browser): its routes, the client manifest, the JPEG peer, the golden vectors."""

from __future__ import annotations

import importlib.util
import inspect
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_codec import CLASS_NAMES, CLASS_WORDS, tiny_codec

from taskcodec.errors import CheckpointError, ConfigError
from taskcodec.io import read_rgb

pytest.importorskip("fastapi")
pytest.importorskip("onnx")
from fastapi.testclient import TestClient  # noqa: E402

from taskcodec import web  # noqa: E402
from taskcodec.serve import create_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "results" / "baselines_10cls" / "rate_accuracy.csv"


def _golden_module():
    spec = importlib.util.spec_from_file_location("web_golden", ROOT / "tests" / "web" / "golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    from taskcodec.cli import main
    from taskcodec.export import export_codec
    from taskcodec.preprocessing import preprocessing_config

    out = tmp_path_factory.mktemp("web-export")
    codec = tiny_codec("light", entropy="factorized", channels=[8, 8], act="gdn")
    meta = {"lmbda": 1.0, "class_names": CLASS_NAMES, "class_words": CLASS_WORDS, "preprocessing": preprocessing_config(64, 64)}
    enc, dec = export_codec(codec, out, meta)
    assert main(["export", str(enc), "--onnx", "-q"]) == 0
    return {"enc": enc, "dec": dec, "onnx": next(out.glob("client-*.onnx")), "id": dec.stem.split("-")[1]}


def test_golden_vectors_are_what_the_python_side_writes_now() -> None:
    """tests/web/golden.json is current: rewrite it with `python tests/web/golden.py` after changing the coder."""
    assert (ROOT / "tests" / "web" / "golden.json").read_text() == _golden_module().render()


def test_preprocessing_vectors_are_io_read_rgbs_output() -> None:
    """The JS preprocessing is checked against these; they must be what taskcodec compress does to a PNG."""
    import json

    cases = json.loads((ROOT / "tests" / "web" / "golden.json").read_text())["preprocess"]
    takes_crop_pct = "crop_pct" in inspect.signature(read_rgb).parameters
    checked = 0
    for c in cases:
        if c["crop_pct"] != 1.0 and not takes_crop_pct:
            continue
        rgb = np.frombuffer(__import__("base64").b64decode(c["rgb"]), np.uint8).reshape(c["height"], c["width"], 3)
        png = io.BytesIO()
        Image.fromarray(rgb).save(png, format="PNG")
        kwargs = {"crop_pct": c["crop_pct"]} if takes_crop_pct else {}
        out = read_rgb(png.getvalue(), size=(c["out_height"], c["out_width"]), **kwargs)
        assert out.tobytes() == __import__("base64").b64decode(c["expected"]), c
        checked += 1
    assert checked >= 5


def _table(tmp_path: Path, rows: list[str], header: str = "codec,setting,top1,n,diff_ci95_hi") -> Path:
    path = tmp_path / "rate_accuracy.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_the_jpeg_peer_is_the_lowest_quality_reaching_the_reference(tmp_path) -> None:
    peer = web.jpeg_peer(TABLE)
    assert (peer["quality"], peer["reaches"], peer["reference_top1"]) == (75, True, pytest.approx(0.754))
    rows = ["none,raw,0.80,500,0", "jpeg,q=50,0.79,500,0.004", "jpeg,q=10,0.70,500,-0.05", "jpeg,q=30,0.78,500,-0.001"]
    assert web.jpeg_peer(_table(tmp_path, rows))["quality"] == 50  # by the interval, in quality order
    no_ci = ["none,raw,0.80,500", "jpeg,q=90,0.81,500", "jpeg,q=75,0.79,500"]
    assert web.jpeg_peer(_table(tmp_path, no_ci, "codec,setting,top1,n"))["quality"] == 90  # by top-1 alone
    never = web.jpeg_peer(_table(tmp_path, ["none,raw,0.80,500,0", "jpeg,q=5,0.5,500,-0.2", "jpeg,q=20,0.6,500,-0.1"]))
    assert (never["quality"], never["reaches"]) == (20, False)
    with pytest.raises(ConfigError, match="no reference row"):
        web.jpeg_peer(_table(tmp_path, ["jpeg,q=5,0.5,500,-0.2"]))
    with pytest.raises(ConfigError, match="cannot read"):
        web.jpeg_peer(tmp_path / "missing.csv")


def test_the_server_hands_out_the_page_its_files_and_the_client(exported) -> None:
    app = create_app(exported["dec"], results_table=TABLE)
    with TestClient(app) as client:
        page = client.get("/")
        assert page.status_code == 200 and '<script type="module" src="/web/app.js">' in page.text
        for name in ("app.js", "coder.js", "preprocess.js"):
            r = client.get(f"/web/{name}")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
        assert client.get("/web/style.css").headers["content-type"].startswith("text/css")
        for bad in ("/web/__init__.py", "/web/..%2F__init__.py", "/web/package.json", "/web/ort/ort.all.mjs", "/web/nothing.js"):
            assert client.get(bad).status_code == 404, bad
        info = client.get("/web/client.json").json()
        assert info["model"] == exported["id"] == info["client"]["codec_id"]
        assert info["jpeg_peer"]["quality"] == 75 and info["max_pixels"] == 4096 * 4096
        c = info["client"]
        with np.load(exported["onnx"].with_suffix(".npz")) as t:
            assert [len(row) for row in c["cdfs"]] == c["cdf_lengths"] == t["cdf_lengths"].tolist()
            assert c["cdfs"][0] == t["cdfs"][0][: c["cdf_lengths"][0]].tolist()
            assert c["medians"] == pytest.approx(t["medians"].tolist())
            assert c["stride"] == int(t["stride"])
        assert c["preprocessing"]["input_size"] == [3, 64, 64]
        assert client.get("/web/client.onnx").content == exported["onnx"].read_bytes()
        assert client.get("/health").json()["status"] == "ok"  # the API is untouched


def test_a_missing_runtime_is_named_with_the_command_that_installs_it(exported, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(web, "ORT_DIST", tmp_path / "nothing")
    with TestClient(create_app(exported["dec"])) as client:
        assert client.get("/web/client.json").json()["runtime_installed"] is False
        r = client.get("/web/ort/ort.wasm.min.mjs")
        assert r.status_code == 404 and "npm ci" in r.json()["error"]


def test_a_server_without_a_client_says_how_to_export_one(exported, tmp_path) -> None:
    import shutil

    shutil.copy(exported["dec"], tmp_path)
    with TestClient(create_app(tmp_path / exported["dec"].name)) as client:
        r = client.get("/web/client.json")
        assert r.status_code == 404 and "taskcodec export ENCODER --onnx" in r.json()["error"]
        assert client.get("/web/client.onnx").status_code == 404
        assert client.get("/").status_code == 200  # the page still loads and shows that message


def test_a_client_of_another_model_is_refused_at_start(exported, tmp_path) -> None:
    import shutil

    other = tmp_path / "client-0123456789abcdef.onnx"
    shutil.copy(exported["onnx"], other)
    with np.load(exported["onnx"].with_suffix(".npz")) as t:
        tables = {k: t[k] for k in t.files}
    np.savez(other.with_suffix(".npz"), **{**tables, "codec_id": np.array("0123456789abcdef")})
    with pytest.raises(ConfigError, match="client of model 0123456789abcdef"):
        create_app(exported["dec"], client=other)
    assert create_app(exported["dec"], client=exported["onnx"])  # its own client, named explicitly
    with pytest.raises(CheckpointError, match="are needed"):
        create_app(exported["dec"], client=tmp_path / "none.onnx")
