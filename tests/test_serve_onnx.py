"""The torch-free server: ``export DECODER --onnx``, labels as the PyTorch decoder's, no torch imported."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_codec import CLASS_NAMES, CLASS_WORDS, SAMPLE, tiny_codec

from taskcodec.cli import main
from taskcodec.container import Entry, write_container
from taskcodec.errors import BitstreamError, CheckpointError, ConfigError
from taskcodec.export import export_codec
from taskcodec.preprocessing import preprocessing_config

pytest.importorskip("onnxruntime")
httpx = pytest.importorskip("httpx")
ROOT = Path(__file__).resolve().parents[1]
IMAGES = sorted(SAMPLE.rglob("*.JPEG"))
#: installed as sitecustomize in a child process: any import of torch fails there
NO_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"{name} is blocked: this process must run without torch")
sys.meta_path.insert(0, _NoTorch())
"""


def make_onnx_server(family: str, out: Path) -> dict:
    """A tiny codec's decoder exported with --onnx, and records of the sample images."""
    extra = {"channels": [8, 8], "act": "gdn"} if family == "light" else {}
    codec = tiny_codec(family, entropy="factorized", **extra)
    meta = {"lmbda": 1.0, "class_names": CLASS_NAMES, "class_words": CLASS_WORDS, "preprocessing": preprocessing_config(64, 64)}
    enc, dec = export_codec(codec, out, meta)
    assert main(["export", str(dec), "--onnx", "-q"]) == 0
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()) for p in IMAGES])
    records = codec.encode(images.permute(0, 3, 1, 2).float() / 255)
    return {"codec": codec, "dec": dec, "onnx": next(out.glob("server-*.onnx")), "records": records, "out": out}


@pytest.fixture(scope="module", params=["light", "split"])
def onnx_server(request, tmp_path_factory) -> dict:
    return make_onnx_server(request.param, tmp_path_factory.mktemp(f"onnx-server-{request.param}"))


@pytest.fixture(scope="module")
def light_server(tmp_path_factory) -> dict:
    """The default family only, for the tests that start processes."""
    return make_onnx_server("light", tmp_path_factory.mktemp("onnx-server-process"))


def test_export_decoder_onnx_writes_only_the_server(onnx_server) -> None:
    names = sorted(p.name for p in onnx_server["out"].iterdir())
    cid = _codec_id(onnx_server)
    assert names == [f"decoder-{cid}.pt", f"encoder-{cid}.pt", f"server-{cid}.npz", f"server-{cid}.onnx"]


def test_onnx_server_gives_the_pytorch_decoders_labels(onnx_server) -> None:
    from taskcodec.server_model import OnnxServerModel, TorchServerModel

    records = onnx_server["records"]
    torch_logits = TorchServerModel(onnx_server["dec"]).decode(records)
    for threads in (1, 2):
        onnx_logits = OnnxServerModel(onnx_server["onnx"], threads).decode(records)
        assert onnx_logits.shape == torch_logits.shape == (len(IMAGES), 3)
        assert np.array_equal(onnx_logits.argmax(1), torch_logits.argmax(1))
        np.testing.assert_allclose(onnx_logits, torch_logits, rtol=1e-4, atol=1e-4)
    # the latent the server rebuilds is exactly the PyTorch decoder's
    model = OnnxServerModel(onnx_server["onnx"])
    from taskcodec.bitstream import unpack_record

    payloads = [unpack_record(r)[2] for r in records]
    y_torch = TorchServerModel(onnx_server["dec"]).codec.decode_latents(payloads, (64, 64)).numpy()
    assert np.array_equal(model.decode_latents(payloads, (64, 64)), y_torch)
    # a long-lived server keeps no memory arena (its RSS follows its batches), and no spinning threads
    options = model.session.get_session_options()
    assert options.enable_cpu_mem_arena is False
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_onnx_server_refuses_corrupt_records(onnx_server) -> None:
    from taskcodec.server_model import OnnxServerModel

    model = OnnxServerModel(onnx_server["onnx"])
    with pytest.raises(BitstreamError, match="bytes after the coded data"):
        model.decode([onnx_server["records"][0] + b"\x55" * 40])
    huge = bytes([0xFF]) + bytes([0x80, 0x80, 0x04]) * 2 + b"\x01"  # claims 65536x65536
    with pytest.raises(BitstreamError, match="over the decoder's limit"):
        model.decode([huge])
    with pytest.raises(BitstreamError, match="no records"):
        model.decode([])


def test_onnx_server_files_must_be_whole(onnx_server, tmp_path) -> None:
    from taskcodec.server_model import OnnxServerModel

    lone = tmp_path / "server-0.onnx"
    lone.write_bytes(onnx_server["onnx"].read_bytes())
    with pytest.raises(CheckpointError, match="beside it are needed"):
        OnnxServerModel(lone)
    tables = dict(np.load(onnx_server["onnx"].with_suffix(".npz")))
    np.savez(tmp_path / "server-0.npz", **{**tables, "version": np.array(99)})
    with pytest.raises(CheckpointError, match="re-export"):
        OnnxServerModel(lone)


def test_hyperprior_and_pixel_servers_are_refused(tmp_path) -> None:
    from taskcodec.onnx_export import export_onnx_server

    with pytest.raises(ConfigError, match="desynchronise"):
        export_onnx_server(tiny_codec("light", channels=[8, 8], entropy="hyperprior"), tmp_path, "0" * 16, {})
    pixels = tiny_codec("light", channels=[8, 8], entropy="factorized")
    pixels.has_pixels = True  # a family that decodes pixels crops them to each image's size
    with pytest.raises(ConfigError, match="crops them"):
        export_onnx_server(pixels, tmp_path, "0" * 16, {})
    assert not list(tmp_path.glob("server-*"))


def test_an_export_without_onnx_says_what_to_add(onnx_server, capsys) -> None:
    assert main(["export", str(onnx_server["dec"])]) == 2
    assert "add --onnx to make a torch-free server" in capsys.readouterr().err


def test_http_answers_match_the_pytorch_server(onnx_server) -> None:
    from taskcodec.serve import create_app, serve_in_thread

    data = write_container([Entry(r, name=f"im{k}") for k, r in enumerate(onnx_server["records"])], _codec_id(onnx_server))
    answers = []
    for path in (onnx_server["onnx"], onnx_server["dec"]):
        url, stop = serve_in_thread(create_app(path, max_wait=None))
        try:
            r = httpx.post(f"{url}/v1/classify", params={"topk": 2}, content=data, timeout=60)
        finally:
            stop()
        assert r.status_code == 200
        answers.append([[t["class"] for t in row["top"]] for row in r.json()["results"]])
        assert {t["words"] for row in r.json()["results"] for t in row["top"]} <= set(CLASS_WORDS)
    assert answers[0] == answers[1]


def _codec_id(onnx_server) -> str:
    return onnx_server["onnx"].stem.split("-", 1)[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_serves_the_onnx_model_with_workers_and_no_torch(light_server, tmp_path) -> None:
    """`taskcodec serve -m server-<id>.onnx --workers 2` in a process (and workers) where torch cannot be imported."""
    (tmp_path / "sitecustomize.py").write_text(NO_TORCH)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "blocked" in check.stderr  # the blocker works
    port = _free_port()
    code = (
        "import sys\n"
        "from taskcodec.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = ["serve", "-m", str(light_server["onnx"]), "--port", str(port), "--workers", "2", "--threads", "1"]
    server = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              cwd=tmp_path, text=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(1200):  # up to ~2 minutes on a loaded machine (not a speed check)
            if server.poll() is not None:
                pytest.fail(f"the server exited: {server.communicate()[1][-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        data = write_container([Entry(r) for r in light_server["records"]], _codec_id(light_server))
        from taskcodec.server_model import TorchServerModel

        expect = TorchServerModel(light_server["dec"]).decode(light_server["records"]).argmax(1).tolist()
        for _ in range(4):  # several requests: the two workers share the socket
            r = httpx.post(f"{url}/v1/classify", content=data, timeout=60)
            assert r.status_code == 200, r.text
            assert [row["top"][0]["class"] for row in r.json()["results"]] == expect
        assert "taskcodec_responses_total" in httpx.get(f"{url}/metrics", timeout=10).text
    finally:
        server.terminate()
        try:
            _, err = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            _, err = server.communicate()
    assert "Traceback" not in err, err[-2000:]


def test_importing_the_serve_path_imports_no_torch(light_server, tmp_path) -> None:
    """... and the app warms the model up: the coder's kernels are compiled before the first request."""
    code = (
        "import sys\n"
        "import taskcodec.cli, taskcodec.serve, taskcodec.server_model, taskcodec.report\n"
        "from taskcodec.serve import create_app\n"
        f"app = create_app({str(light_server['onnx'])!r})\n"
        "print(app.state.model.codec_id)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'lightning', 'timm', 'compressai')))\n"
        "from taskcodec.range_coder import compiled_available\n"
        "if compiled_available():\n"
        "    from taskcodec.range_coder_numba import decode_batch\n"
        "    assert decode_batch.signatures, 'warm_up did not run the compiled decoder'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert out.returncode == 0, out.stderr
    codec_id, modules = out.stdout.strip().splitlines()
    assert codec_id == _codec_id(light_server) and json.loads(modules.replace("'", '"')) == []
