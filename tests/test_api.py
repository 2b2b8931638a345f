"""The Python API: load_client(...).compress(images) -> bytes, load_server(...).classify(bytes) -> labels."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tiny_codec import CLASS_NAMES, CLASS_WORDS, SAMPLE, tiny_codec

import taskcodec
from taskcodec.errors import BitstreamError, DataError
from taskcodec.export import export_codec
from taskcodec.preprocessing import preprocessing_config

ROOT = SAMPLE.parents[2]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    out = tmp_path_factory.mktemp("api")
    meta = {"lmbda": 1.0, "class_names": CLASS_NAMES, "class_words": CLASS_WORDS, "preprocessing": preprocessing_config(64, 64)}
    return export_codec(tiny_codec("split"), out, meta)


def test_client_and_server_agree_with_the_cli(exports, tmp_path) -> None:
    enc, dec = exports
    images = sorted(SAMPLE.rglob("*.JPEG"))[:4]
    client, server = taskcodec.load_client(enc), taskcodec.load_server(dec)
    data = client.compress([str(p) for p in images], names=[p.name for p in images])
    labels = server.classify(data)
    assert len(labels) == 4 and set(labels) <= set(CLASS_WORDS)
    # the same images through the CLI give the same container bytes and the same labels
    from taskcodec.cli import main

    assert main(["compress", *map(str, images), "-m", str(enc), "-o", str(tmp_path / "a.tca"), "--archive", "-q"]) == 0
    assert (tmp_path / "a.tca").read_bytes() == data
    assert server.classify(tmp_path / "a.tca") == labels
    top = server.predict(data, topk=2)
    assert [r["name"] for r in top] == [p.name for p in images] and len(top[0]["top"]) == 2


def test_client_takes_arrays_pil_images_and_bytes(exports) -> None:
    enc, dec = exports
    path = sorted(SAMPLE.rglob("*.JPEG"))[0]
    client, server = taskcodec.load_client(enc), taskcodec.load_server(dec)
    array = np.asarray(Image.open(path).convert("RGB"))
    one = server.classify(client.compress(array))
    assert server.classify(client.compress(Image.open(path))) == one == server.classify(client.compress(path.read_bytes()))
    big = Image.fromarray(array).resize((640, 480))
    assert len(server.classify(client.compress(big))) == 1  # resized to the model's input
    with pytest.raises(DataError, match="uint8"):
        client.compress(np.zeros((4, 4), np.float32))
    with pytest.raises(BitstreamError):
        server.classify(b"not a container")


def test_readme_example_runs(exports, tmp_path) -> None:
    """The README's Python API example, run as written with the export paths filled in."""
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(import taskcodec\n.*?)```", readme, re.S).group(1)
    enc, dec = exports
    images = sorted(SAMPLE.rglob("*.JPEG"))[:2]
    code = (code.replace("export/encoder-<id>.pt", str(enc)).replace("export/decoder-<id>.pt", str(dec))
            .replace('"photos/cat.jpg"', repr(str(images[0]))).replace('"photos/dog.png"', repr(str(images[1]))))  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert any(w in out.stdout for w in CLASS_WORDS)


def test_importing_taskcodec_stays_cheap() -> None:
    out = subprocess.run([sys.executable, "-c", "import sys, taskcodec; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.strip() == "False"
