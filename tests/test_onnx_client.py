"""The torch-free client: ONNX export, records the PyTorch server decodes, no torch imported, no desync."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_codec import CLASS_NAMES, SAMPLE, tiny_codec

from taskcodec.bitstream import unpack_record
from taskcodec.cli import main
from taskcodec.container import read_container
from taskcodec.errors import ConfigError, DataError
from taskcodec.export import export_codec, load_decoder
from taskcodec.preprocessing import preprocessing_config

pytest.importorskip("onnxruntime")
IMAGES = sorted(SAMPLE.rglob("*.JPEG"))


@pytest.fixture(scope="module", params=["light", "split"])
def onnx_export(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"onnx-{request.param}")
    extra = {"channels": [8, 8], "act": "gdn"} if request.param == "light" else {}
    codec = tiny_codec(request.param, entropy="factorized", **extra)
    enc, dec = export_codec(codec, out, {"lmbda": 1.0, "class_names": CLASS_NAMES, "preprocessing": preprocessing_config(64, 64)})
    assert main(["export", str(enc), "--onnx", "-q"]) == 0
    return codec, enc, dec, next(out.glob("client-*.onnx"))


@pytest.mark.parametrize("threads", [1, 2])
def test_onnx_records_decode_to_the_same_labels(onnx_export, threads) -> None:
    """Records from onnxruntime are byte-identical to PyTorch's wherever the latents round alike, and
    the PyTorch server gives the same labels; every record decodes (no desynchronisation)."""
    from taskcodec.client import load_onnx_client

    codec, enc, dec, onnx_path = onnx_export
    client = load_onnx_client(onnx_path, threads=threads)
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in IMAGES])
    for batch in (1, len(images)):
        onnx_records = [r for i in range(0, len(images), batch) for r in client.encode(images[i : i + batch])]
        with torch.no_grad():
            x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
            torch_records = codec.encode(x)
        same = sum(a == b for a, b in zip(onnx_records, torch_records, strict=True))
        assert same >= len(images) - 1  # float rounding may move one symbol of one image, never more here
        server, _ = load_decoder(dec)
        out = server.decode(onnx_records)
        a = out["logits"].argmax(1)
        b = server.decode(torch_records)["logits"].argmax(1)
        assert (a == b).float().mean() >= 0.99
        # no desynchronisation: the server rebuilds exactly the latent the ONNX client quantised and sent
        y = np.concatenate([client.session.run(["y"], {"x": images[i : i + batch].transpose(0, 3, 1, 2).astype(np.float32)
                                                        / np.float32(255)})[0] for i in range(0, len(images), batch)])  # fmt: skip
        sent = np.rint(y - client.medians) + client.medians
        assert np.array_equal(out["y_hat"].numpy(), sent.astype(np.float32))


def test_container_from_the_onnx_client_is_classified(onnx_export, tmp_path, capsys) -> None:
    _, enc, dec, onnx_path = onnx_export
    out = tmp_path / "c.tca"
    from taskcodec.client.__main__ import main as client_main

    assert client_main(["compress", *map(str, IMAGES[:3]), "-m", str(onnx_path), "-o", str(out)]) == 0
    container = read_container(out.read_bytes())
    assert len(container.entries) == 3 and all(unpack_record(e.record)[:2] == (64, 64) for e in container.entries)
    assert main(["classify", str(out), "-m", str(dec)]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4  # the client's summary + 3 labels


def test_the_client_refuses_native_sizes_the_server_would_refuse(onnx_export, monkeypatch) -> None:
    """The ONNX client checks both halves of ``check_native_size``: at least one latent cell, and a
    latent (the same shape the PyTorch codec computes) under the decoder's symbol limit."""
    from taskcodec.client import load_onnx_client

    codec, _, _, onnx_path = onnx_export
    client = load_onnx_client(onnx_path, native_size=True)
    for h, w in ((64, 64), (65, 97), (1, 300), (480, 640)):
        assert client.latent_shape(h, w) == codec.latent_shape(h, w)
    buf = io.BytesIO()
    Image.new("RGB", (codec.stride - 1, codec.stride - 1)).save(buf, format="PNG")
    with pytest.raises(DataError, match="smaller than one latent cell"):
        client.compress([buf.getvalue()])
    c, h, w = codec.latent_shape(64, 64)  # the sample images are 64x64
    monkeypatch.setattr("taskcodec.preprocessing.MAX_LATENT_SYMBOLS", c * h * w)
    assert client.compress([str(IMAGES[0])])  # at the limit: written
    monkeypatch.setattr("taskcodec.preprocessing.MAX_LATENT_SYMBOLS", c * h * w - 1)
    with pytest.raises(DataError, match="over the decoder's limit"):
        client.compress([str(IMAGES[0])])


def test_the_client_never_imports_torch(onnx_export, tmp_path) -> None:
    _, _, _, onnx_path = onnx_export
    code = (
        "import sys\n"
        "from taskcodec.client import load_onnx_client\n"
        f"data = load_onnx_client({str(onnx_path)!r}).compress({[str(p) for p in IMAGES[:2]]!r})\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))\n"
        "print(len(data))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 0


def test_hyperprior_clients_are_refused(tmp_path) -> None:
    from taskcodec.onnx_export import export_onnx_client

    codec = tiny_codec("light", channels=[8, 8], entropy="hyperprior")
    with pytest.raises(ConfigError, match="desynchronise"):
        export_onnx_client(codec, tmp_path, "0" * 16, {})
    assert not list(Path(tmp_path).glob("client-*"))
