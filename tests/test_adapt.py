"""`taskcodec adapt`: a new server for an unchanged client, on an image folder the codec never saw."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from tiny_codec import SAMPLE, export_tiny

from datamodules.packed import PackedLatentDataModule
from lightning_modules.server import ServerModule
from taskcodec.adapt import server_codec
from taskcodec.cli import main
from taskcodec.errors import ConfigError
from taskcodec.export import load_decoder, load_encoder, read_export


@pytest.fixture(scope="module")
def user_data(tmp_path_factory) -> dict:
    """A user's own classes as an ImageFolder (two classes the tiny codec was not labelled with)."""
    tmp = tmp_path_factory.mktemp("adapt")
    _, enc, dec = export_tiny(tmp / "export")
    folder = tmp / "my_images"
    for cls, wnid in (("cats", "n01443537"), ("dogs", "n01641577")):
        (folder / cls).mkdir(parents=True)
        for f in sorted((SAMPLE / "train" / wnid / "images").glob("*.JPEG")):
            shutil.copy(f, folder / cls / f.name.replace(".JPEG", ".jpg"))
    return {"encoder": enc, "decoder": dec, "folder": folder, "tmp": tmp}


def test_adapt_writes_a_decoder_that_classify_uses(user_data, capsys) -> None:
    out = user_data["tmp"] / "adapted"
    args = ["adapt", str(user_data["folder"]), "-m", str(user_data["encoder"]), "-o", str(out),
            "--epochs", "1", "--holdout-per-class", "1", "--batch-size", "4", "--threads", "1", "-q"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "adapt.json").read_text())
    assert summary["num_classes"] == 2 and summary["train_images"] == summary["images"] - 2
    assert 0 <= summary["holdout_top1"] <= 1 and summary["record_bytes_per_image"] > 0

    client = read_export(user_data["encoder"])
    decoder, meta = load_decoder(Path(summary["decoder"]))
    assert meta["codec_id"] == client["codec_id"]  # the client's id: its containers are accepted
    assert meta["class_names"] == ["cats", "dogs"] and decoder.config["num_classes"] == 2
    assert meta["adapted"]["server_id"] != client["codec_id"]
    assert (out / f"encoder-{client['codec_id']}.pt").read_bytes() == Path(user_data["encoder"]).read_bytes()
    exported = read_export(summary["decoder"])["state_dict"]
    for k, v in client["state_dict"].items():  # the entropy stage is exactly the client's
        if k.startswith("entropy."):
            assert torch.equal(exported[k], v)

    # the unchanged client compresses; the new decoder classifies into the user's classes
    tc = user_data["tmp"] / "tc"
    assert main(["compress", str(user_data["folder"]), "-m", str(user_data["encoder"]), "-o", str(tc), "-q"]) == 0
    capsys.readouterr()
    assert main(["classify", str(tc), "-m", summary["decoder"], "--format", "json", "-q"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == summary["images"]
    assert {r["top"][0]["name"] for r in rows} <= {"cats", "dogs"}

    # same labels as the in-memory server on the same latents
    encoder, _ = load_encoder(user_data["encoder"])
    files = sorted((user_data["folder"]).rglob("*.jpg"))
    from taskcodec.io import load_image

    x = torch.stack([load_image(f) for f in files])
    expected = decoder.decode(encoder.encode(x))["logits"].argmax(1)
    by_name = {Path(r["file"]).name.split(".")[0]: r["top"][0]["name"] for r in rows}
    got = [by_name[f.stem] for f in files]
    assert got == [meta["class_names"][i] for i in expected.tolist()]


def test_adapt_resumes_its_pack_and_linear_probe(user_data) -> None:
    out = user_data["tmp"] / "linear"
    common = [str(user_data["folder"]), "-m", str(user_data["encoder"]), "-o", str(out), "--epochs", "1",
              "--holdout-per-class", "0", "--batch-size", "4", "--threads", "1", "-q"]  # fmt: skip
    assert main(["adapt", *common, "--server", "linear"]) == 0
    decoder, meta = load_decoder(json.loads((out / "adapt.json").read_text())["decoder"])
    assert decoder.config["server"] == "linear" and meta["adapted"]["holdout_top1"] is None
    assert sum(p.numel() for p in decoder.tail.parameters()) == (8 + 1) * 2  # M=8 latent channels -> 2 classes
    assert main(["adapt", *common, "--server", "linear"]) == 0  # the pack is reused, not redone


def test_init_decoder_keeps_the_server_but_renews_the_class_layer(user_data) -> None:
    old, _ = load_decoder(user_data["decoder"])
    module = ServerModule(str(user_data["decoder"]), reset="head", num_classes=2)
    new = module.codec
    for k, v in old.g_s.state_dict().items():
        assert torch.equal(new.g_s.state_dict()[k], v)
    assert new.tail.model.fc.weight.shape == (2, old.tail.model.fc.weight.shape[1])
    same = ServerModule(str(user_data["decoder"]), reset="head").codec  # same class count: still a new layer
    assert not torch.equal(same.tail.model.fc.weight, old.tail.model.fc.weight)
    assert all(not p.requires_grad for p in new.entropy.parameters())

    # end to end: `adapt --init-decoder` starts from that server and exports a decoder of the client
    out = user_data["tmp"] / "from_decoder"
    assert main(["adapt", str(user_data["folder"]), "-m", str(user_data["encoder"]), "--init-decoder",
                 str(user_data["decoder"]), "-o", str(out), "--epochs", "1", "--holdout-per-class", "1",
                 "--batch-size", "4", "--threads", "1", "-q"]) == 0  # fmt: skip
    summary = json.loads((out / "adapt.json").read_text())
    assert summary["init_decoder"] == str(user_data["decoder"]) and summary["num_classes"] == 2
    assert load_decoder(summary["decoder"])[1]["codec_id"] == read_export(user_data["encoder"])["codec_id"]
    # evaluate.py labels the adapted server's rows apart from the client's own server
    from evaluate import codec_exports, load_pair
    from taskcodec.evaluation import codec_label

    (enc, dec), = codec_exports([str(out)])
    encoder, decoder, meta = load_pair(enc, dec)
    assert codec_label(encoder.family, decoder.config, meta)[0].endswith("+adapted")
    _, own_dec, own_meta = load_pair(*codec_exports([str(Path(user_data["decoder"]).parent)])[0])
    assert "+adapted" not in codec_label(encoder.family, own_dec.config, own_meta)[0]


def test_adapt_refuses_mismatched_inputs(user_data, tmp_path, capsys) -> None:
    _, other_enc, other_dec = export_tiny(tmp_path / "other", split="layer2")
    args = ["adapt", str(user_data["folder"]), "-m", str(user_data["encoder"]), "-o", str(tmp_path / "x"),
            "--init-decoder", str(other_dec), "-q"]  # fmt: skip
    assert main(args) == 2
    assert "model ids differ" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="encoder file"):
        server_codec(other_enc, reset="head")
    with pytest.raises(ConfigError, match="reset"):
        server_codec(other_enc, reset="some")
    assert main(["adapt", str(tmp_path / "missing"), "-m", str(user_data["encoder"]), "-o", str(tmp_path / "y"), "-q"]) == 2
    assert main(["adapt", str(user_data["folder"]), "-m", str(user_data["encoder"]), "-o", str(tmp_path / "z"),
                 "--epochs", "0", "-q"]) == 2  # fmt: skip


def test_packed_holdout_is_stratified(user_data, tmp_path) -> None:
    folder = tmp_path / "pack"
    assert main(["pack", str(user_data["folder"]), "-m", str(user_data["encoder"]), "-o", str(folder), "-q"]) == 0
    data = PackedLatentDataModule(str(folder), str(user_data["encoder"]), holdout_per_class=2, seed=0)
    data.setup()
    held = data.sets["val"].tensors[1]
    assert sorted(held.tolist()) == [0, 0, 1, 1] and data.sets["test"] is data.sets["val"]
    assert len(data.sets["train"]) + 4 == sum(1 for _ in user_data["folder"].rglob("*.jpg"))
    with pytest.raises(ConfigError):
        PackedLatentDataModule(str(folder), str(user_data["encoder"]), val=str(folder), holdout_per_class=1)


@pytest.mark.parametrize("family,kwargs", [("split", {}), ("hyperprior", {"head": "latent"}), ("hyperprior", {"head": "pixel"})])
def test_every_family_names_its_class_layer(family, kwargs, tmp_path) -> None:
    codec, _, dec = export_tiny(tmp_path, family, **kwargs)
    (prefix,) = codec.classifier_head_prefixes()
    head = {k: v for k, v in codec.state_dict().items() if k.startswith(prefix)}
    assert head and next(iter(head.values())).shape[0] == 3  # the 3-class layer, nothing else
    renewed = server_codec(dec, reset="head")[0].state_dict()
    kept = server_codec(dec, reset="none")[0].state_dict()
    assert all(not torch.equal(renewed[k], v) for k, v in head.items() if v.ndim > 1)
    assert all(torch.equal(kept[k], v) for k, v in head.items())


def test_adapt_keeps_going_past_an_unreadable_image(user_data, tmp_path, capsys) -> None:
    folder = tmp_path / "imgs"
    shutil.copytree(user_data["folder"], folder)
    (folder / "cats" / "zz-broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "adapted"
    args = ["adapt", str(folder), "-m", str(user_data["encoder"]), "-o", str(out), "--epochs", "1",
            "--holdout-per-class", "1", "--batch-size", "4", "--threads", "1", "-q"]  # fmt: skip
    assert main(args) == 2  # trained and exported, but says what it left out
    assert "zz-broken.jpg" in capsys.readouterr().err
    summary = json.loads((out / "adapt.json").read_text())
    assert [s["name"] for s in summary["skipped"]] == ["cats/zz-broken.jpg"] and Path(summary["decoder"]).is_file()


def test_adapt_reads_each_export_once(user_data, tmp_path, monkeypatch) -> None:
    """The workflow reads the client's export and the decoder it starts from once each, and passes them down."""
    import taskcodec.export as export_module
    from lightning_modules.adapt import adapt

    reads: list[str] = []
    real = export_module.read_checkpoint
    monkeypatch.setattr(export_module, "read_checkpoint", lambda p: reads.append(Path(p).name) or real(p))
    adapt(str(user_data["encoder"]), str(user_data["folder"]), str(tmp_path / "a"), init_decoder=str(user_data["decoder"]),
          epochs=1, holdout_per_class=1, batch_size=4, threads=1)  # fmt: skip
    assert sorted(reads) == sorted([Path(user_data["encoder"]).name, Path(user_data["decoder"]).name])


@pytest.fixture(scope="module")
def two_class_teacher(tmp_path_factory) -> str:
    """A 2-class classifier checkpoint in train.py's format (untrained: only its logits matter here)."""
    from lightning_modules.classifier import ClassifierModule

    torch.manual_seed(0)
    module = ClassifierModule("resnet18", num_classes=2)
    path = tmp_path_factory.mktemp("teacher") / "teacher.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    return str(path)


def test_adapt_distils_from_a_teacher(user_data, two_class_teacher, reference_ckpt, tmp_path, capsys) -> None:
    """--teacher: the teacher's logits on the packed images, as the client saw them, cached; the server trains on KD + CE."""
    import csv

    from taskcodec.io import read_rgb, to_tensor
    from taskcodec.models.classifier import load_image_classifier
    from taskcodec.pack import open_source
    from taskcodec.preprocessing import input_size

    out = tmp_path / "kd"
    args = ["adapt", str(user_data["folder"]), "-m", str(user_data["encoder"]), "-o", str(out), "--teacher", two_class_teacher,
            "--distill", "0.7", "--epochs", "1", "--holdout-per-class", "1", "--batch-size", "4", "--threads", "1", "-q"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "adapt.json").read_text())
    teacher = load_image_classifier(two_class_teacher)
    assert summary["teacher"] == two_class_teacher and summary["distill"] == 0.7
    assert summary["teacher_id"] == teacher.content_id and summary["teacher_seconds"] > 0
    cached = torch.load(out / "packs" / f"teacher-{teacher.content_id}.pt", weights_only=True)["logits"]
    images = open_source(str(user_data["folder"]))
    assert cached.shape == (summary["images"], 2)
    size = input_size(read_export(user_data["encoder"])["meta"])
    for i in (0, len(images) - 1):  # pack order, the export's preprocessing
        x = to_tensor(read_rgb(images.read(i), images.names[i], size=size, crop=True))[None]
        with torch.no_grad():
            torch.testing.assert_close(cached[i], teacher(x)[0], rtol=1e-4, atol=1e-4)
    (log,) = out.glob("logs/*/metrics.csv")
    rows = list(csv.DictReader(log.open()))
    assert any(r.get("train/kd") for r in rows)  # the KL term was trained on
    assert read_export(summary["decoder"])["meta"]["adapted"]["distill"] == 0.7
    from taskcodec.evaluation import codec_label

    decoder, meta = load_decoder(summary["decoder"])
    assert codec_label(decoder.family, decoder.config, meta)[0].endswith("+adapted-kd")  # its own rows in tables
    with pytest.raises(ConfigError, match="teacher's logits"):  # a distilling server needs them in every batch
        ServerModule(summary["decoder"], reset="none", distill=0.5).training_step((torch.zeros(1), torch.zeros(1)), 0)

    assert main(args) == 0  # a second run reuses the pack and the teacher's logits
    assert json.loads((out / "adapt.json").read_text())["teacher_seconds"] == 0.0

    capsys.readouterr()  # a teacher of other classes is refused before any training
    bad = ["adapt", str(user_data["folder"]), "-m", str(user_data["encoder"]), "-o", str(tmp_path / "bad"),
           "--teacher", reference_ckpt, "--epochs", "1", "-q"]  # fmt: skip
    assert main(bad) == 2
    assert "3-class classifier" in capsys.readouterr().err
    assert main([*args[:-1], "--distill", "0", "-q"]) == 2


def test_adapt_exports_the_best_holdout_epoch(user_data, tmp_path, monkeypatch) -> None:
    """With a hold-out, the exported server is the best hold-out epoch's, not the last one's."""
    import lightning_modules.adapt as workflow

    scores, snapshots = [0.2, 0.9, 0.1], []

    class Scripted(ServerModule):  # a hold-out top-1 that peaks at epoch 1, and the weights of every epoch
        def validation_step(self, batch, batch_idx: int) -> None:
            pass

        def on_validation_epoch_end(self) -> None:
            if not self.trainer.sanity_checking:
                self.log("val/acc", scores[self.current_epoch])
                snapshots.append({k: v.clone() for k, v in self.codec.side_state_dict("decoder").items()})

    monkeypatch.setattr(workflow, "ServerModule", Scripted)
    out = tmp_path / "best"
    summary = workflow.adapt(str(user_data["encoder"]), str(user_data["folder"]), str(out), epochs=3,
                             holdout_per_class=1, batch_size=4, threads=1)  # fmt: skip
    assert summary["best_epoch"] == 1 and len(snapshots) == 3
    exported = read_export(summary["decoder"])["state_dict"]
    server = [k for k in snapshots[1] if not k.startswith("entropy.") and snapshots[1][k].is_floating_point()]
    assert all(torch.equal(exported[k], snapshots[1][k]) for k in server)
    assert not all(torch.equal(exported[k], snapshots[2][k]) for k in server)  # the last epoch's differ
    assert not (out / "checkpoints").exists()  # the best epoch's weights file is not left behind
