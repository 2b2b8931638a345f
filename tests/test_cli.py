"""`taskcodec compress | classify | decompress | info` end to end, against the in-memory model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_codec import CLASS_WORDS, SAMPLE, export_tiny

from taskcodec.cli import build_parser, main
from taskcodec.container import read_container_file
from taskcodec.io import load_image, read_rgb

VAL = SAMPLE / "val" / "images"


@pytest.fixture(scope="module")
def split_export(tmp_path_factory) -> dict:
    codec, enc, dec = export_tiny(tmp_path_factory.mktemp("split"))
    return {"codec": codec, "encoder": str(enc), "decoder": str(dec), "id": enc.stem.split("-")[1]}


def _classify_json(files: list[str], decoder: str, capsys, topk: int = 3) -> list[dict]:
    capsys.readouterr()
    assert main(["classify", *files, "-m", decoder, "--topk", str(topk), "--format", "json", "-q"]) == 0
    return json.loads(capsys.readouterr().out)


def test_compress_folder_then_classify_matches_in_memory_model(split_export, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["compress", str(SAMPLE / "val"), "-m", split_export["encoder"], "-o", str(out), "-q"]) == 0
    files = sorted(out.rglob("*.tc"))
    sources = sorted(VAL.iterdir())
    assert [f.relative_to(out).as_posix() for f in files] == [f"images/{p.name}.tc" for p in sources]
    rows = _classify_json([str(out)], split_export["decoder"], capsys)
    codec = split_export["codec"]
    with torch.no_grad():
        expected = torch.softmax(codec(torch.stack([load_image(p) for p in sources]))["logits"].double(), 1)
    assert len(rows) == len(sources)
    for row, probs in zip(rows, expected, strict=True):
        assert [t["class"] for t in row["top"]] == probs.argsort(descending=True).tolist()
        assert [t["probability"] for t in row["top"]] == pytest.approx(probs.sort(descending=True).values.tolist(), abs=1e-5)
        assert row["top"][0]["words"] in CLASS_WORDS
    # every .tc names the model, and `info` says which
    assert main(["info", str(files[0])]) == 0
    assert split_export["id"] in capsys.readouterr().out


def test_archive_keeps_names_order_and_labels_match_single_files(split_export, tmp_path, capsys) -> None:
    archive = tmp_path / "all.tca"
    odd = tmp_path / "odd.png"  # a different size: coded in its own batch
    Image.open(sorted(VAL.iterdir())[0]).resize((40, 24)).save(odd)
    assert main(["compress", str(VAL), str(odd), "-m", split_export["encoder"], "-o", str(archive), "--archive", "-q"]) == 0
    container = read_container_file(archive)
    assert [e.name for e in container.entries] == sorted(p.name for p in VAL.iterdir()) + ["odd.png"]
    assert container.codec_id == split_export["id"]
    rows = _classify_json([str(archive)], split_export["decoder"], capsys)
    with torch.no_grad():
        alone = split_export["codec"](load_image(odd)[None])["logits"].softmax(1)[0]
    assert rows[-1]["top"][0]["class"] == int(alone.argmax())
    assert main(["info", str(archive)]) == 0
    text = capsys.readouterr().out
    assert split_export["id"] in text and "records: 7" in text and "40x24" not in text  # sizes are H x W
    assert "24x40" in text
    assert main(["classify", str(archive), "-m", split_export["decoder"], "--format", "csv", "-q"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("file,index,name") and len(lines) == 8


def test_every_command_has_help(capsys) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"compress", "classify", "decompress", "info", "pack", "export"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0 and "usage: taskcodec " + name in capsys.readouterr().out


def test_decompress_pixels_and_latent_refusal(tmp_path, split_export, capsys) -> None:
    codec, enc, dec = export_tiny(tmp_path / "px", "hyperprior", head="pixel")
    image = sorted(VAL.iterdir())[1]
    assert main(["compress", str(image), "-m", str(enc), "-o", str(tmp_path / "c"), "-q"]) == 0
    tc = tmp_path / "c" / (image.name + ".tc")
    assert main(["decompress", str(tc), "-m", str(dec), "-o", str(tmp_path / "x.png")]) == 0
    with torch.no_grad():
        x_hat = codec.decode([read_container_file(tc).entries[0].record])["x_hat"][0]
    expected = x_hat.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(read_rgb(tmp_path / "x.png"), expected)
    capsys.readouterr()
    assert main(["decompress", str(tc), "-m", split_export["decoder"], "-o", str(tmp_path / "y.png")]) == 2
    err = capsys.readouterr().err
    assert "model " in err and ("made by model" in err or "no image to show" in err)
    assert not (tmp_path / "y.png").exists()


def test_wrong_model_encoder_as_decoder_and_hostile_pickle(split_export, tmp_path, capsys) -> None:
    _, enc2, dec2 = export_tiny(tmp_path / "other", "split", downsample=1)
    assert main(["compress", str(VAL), "-m", split_export["encoder"], "-o", str(tmp_path / "o"), "-q"]) == 0
    capsys.readouterr()
    assert main(["classify", str(tmp_path / "o"), "-m", str(dec2)]) == 2
    err = capsys.readouterr().err  # every file refused, each with the model that made it, then the summary
    assert f"made by model {split_export['id']}" in err and "0 files classified" in err.splitlines()[-1]
    assert main(["classify", str(tmp_path / "o"), "-m", str(dec2), "--strict"]) == 2
    err = capsys.readouterr().err
    assert f"made by model {split_export['id']}" in err and err.count("\n") == 1
    assert main(["classify", str(tmp_path / "o"), "-m", split_export["encoder"]]) == 2
    assert "decoder file is needed" in capsys.readouterr().err

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "decoder-evil.pt"
    torch.save({"kind": "taskcodec-decoder", "payload": Evil()}, evil)
    assert main(["classify", str(tmp_path / "o"), "-m", str(evil)]) == 2
    assert not marker.exists() and "cannot read checkpoint" in capsys.readouterr().err
    assert main(["info", str(evil)]) == 2 and not marker.exists()


def test_bad_images_are_one_line_errors(split_export, tmp_path, capsys) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    cases = [
        ([str(tmp_path / "bad.jpg")], "cannot read image"),
        ([str(tmp_path / "missing.png")], "does not exist"),
        ([str(tmp_path / "big.png"), "--max-pixels", "1000"], "over the limit"),
    ]
    for args, message in cases:
        assert main(["compress", *args, "-m", split_export["encoder"], "-o", str(tmp_path / "o"), "-q", "--strict"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.startswith("taskcodec: error:") and err.count("\n") == 1
        # without --strict: the file is reported as skipped, then a one-line summary; still exit 2
        assert main(["compress", *args, "-m", split_export["encoder"], "-o", str(tmp_path / "o"), "-q"]) == 2
        err = capsys.readouterr().err
        assert message in err and all(line.startswith("taskcodec:") for line in err.splitlines())


ENCODE = """
import sys, warnings
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(int(sys.argv[1]))
from taskcodec.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_encode_two_threads_decode_one_thread_other_process(split_export, tmp_path) -> None:
    out = tmp_path / "t.tca"
    run = [sys.executable, "-c", ENCODE]
    subprocess.run([*run, "2", "compress", str(VAL), "-m", split_export["encoder"], "-o", str(out),
                    "--archive", "--threads", "2", "-q"], check=True)  # fmt: skip
    got = subprocess.run([*run, "1", "classify", str(out), "-m", split_export["decoder"], "--threads", "1",
                          "--topk", "3", "--format", "json", "-q"], check=True, capture_output=True, text=True)  # fmt: skip
    rows = json.loads(got.stdout)
    with torch.no_grad():
        logits = split_export["codec"](torch.stack([load_image(p) for p in sorted(VAL.iterdir())]))["logits"]
    assert [[t["class"] for t in r["top"]] for r in rows] == logits.argsort(1, descending=True).tolist()
    bad = subprocess.run([*run, "1", "classify", str(tmp_path / "none.tc"), "-m", split_export["decoder"], "--strict"],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("taskcodec: error:") and bad.stderr.count("\n") == 1


def test_compress_applies_the_exports_preprocessing(tmp_path) -> None:
    """A 640x480 photo is resized and centre-cropped to the model's input; --native-size keeps it as it is."""
    import numpy as np
    from PIL import Image
    from tiny_codec import CLASS_NAMES, tiny_codec

    from taskcodec.bitstream import unpack_record
    from taskcodec.container import read_container_file
    from taskcodec.export import export_codec
    from taskcodec.preprocessing import preprocessing_config

    codec = tiny_codec("split")
    enc, dec = export_codec(codec, tmp_path / "m", {"lmbda": 1.0, "class_names": CLASS_NAMES,
                                                    "preprocessing": preprocessing_config(64, 64)})  # fmt: skip
    photo = tmp_path / "photo.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((480, 640, 3)) * 255).astype(np.uint8)).save(photo, quality=90)
    assert main(["compress", str(photo), "-m", str(enc), "-o", str(tmp_path / "a.tca"), "--archive", "-q"]) == 0
    (entry,) = read_container_file(tmp_path / "a.tca").entries
    assert unpack_record(entry.record)[:2] == (64, 64)
    assert main(["compress", str(photo), "-m", str(enc), "-o", str(tmp_path / "b.tca"), "--archive", "-q", "--native-size"]) == 0
    (entry,) = read_container_file(tmp_path / "b.tca").entries
    assert unpack_record(entry.record)[:2] == (480, 640)
    assert main(["classify", str(tmp_path / "a.tca"), "-m", str(dec)]) == 0


def test_native_size_refuses_what_the_model_cannot_take(tmp_path, capsys) -> None:
    import numpy as np
    from PIL import Image
    from tiny_codec import export_tiny

    _, enc, _ = export_tiny(tmp_path / "m")
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tiny)  # the split codec's latent cell is 32x32 pixels
    assert main(["compress", str(tiny), "-m", str(enc), "-o", str(tmp_path / "t"), "-q", "--native-size"]) == 2
    assert "smaller than one latent cell" in capsys.readouterr().err


def test_info_prints_the_preprocessing(tmp_path, capsys) -> None:
    from tiny_codec import tiny_codec

    from taskcodec.export import export_codec
    from taskcodec.preprocessing import preprocessing_config

    enc, _ = export_codec(tiny_codec("split"), tmp_path, {"lmbda": 1.0, "preprocessing": preprocessing_config(64, 64)})
    assert main(["info", str(enc)]) == 0
    out = capsys.readouterr().out
    assert "preprocessing: RGB in [0, 1]" in out and "center crop to 64x64" in out and "inside the model" in out


def test_batch_commands_keep_going_past_bad_inputs(split_export, tmp_path, capsys) -> None:
    """One unreadable image among good ones: the rest are compressed, it is reported, the exit is 2;
    --strict stops at it and writes nothing. classify skips a corrupt file the same way."""
    enc, dec = split_export["encoder"], split_export["decoder"]
    folder = tmp_path / "in"
    folder.mkdir()
    good = sorted(SAMPLE.rglob("*.JPEG"))[:3]
    for p in good:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert main(["compress", str(folder), "-m", str(enc), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "skipped" in err and "broken.jpg" in err and "3 compressed, 1 skipped" in err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tc")) == sorted(p.name + ".tc" for p in good)
    assert main(["compress", str(folder), "-m", str(enc), "-o", str(tmp_path / "a.tca"), "--archive", "-q"]) == 2
    capsys.readouterr()
    assert main(["classify", str(tmp_path / "a.tca"), "-m", str(dec)]) == 0  # the archive holds the 3 good ones
    assert len(capsys.readouterr().out.strip().splitlines()) == 3
    assert main(["compress", str(folder), "-m", str(enc), "-o", str(tmp_path / "s.tca"), "--archive", "-q", "--strict"]) == 2
    assert not (tmp_path / "s.tca").exists() and not list(tmp_path.glob("s.tca*"))  # no half-written archive
    (tmp_path / "out" / "zz-corrupt.tc").write_bytes(b"garbage")
    capsys.readouterr()
    assert main(["classify", str(tmp_path / "out"), "-m", str(dec)]) == 2
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 3 and "zz-corrupt.tc" in err and "1 skipped" in err
    assert main(["classify", str(tmp_path / "out"), "-m", str(dec), "--strict"]) == 2
