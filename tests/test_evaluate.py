"""evaluate.py end to end on the sample data: baselines, taskcodec rows, fine-tuning, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, bench_module, compose_cfg

from evaluate import evaluate
from taskcodec.errors import CheckpointError
from taskcodec.evaluation import COLUMNS, headline
from taskcodec.models.classifier import reference_id


def cfg_eval(tmp_path, reference_ckpt, *extra):
    return compose_cfg(
        "evaluate.yaml",
        [*DATA, f"classifier_ckpt={reference_ckpt}", f"output_dir={tmp_path}", "wandb.mode=disabled",
         "baselines={jpeg: [10, 75], webp: [50], avif: [50], downsample: [2], downsample_jpeg: [{factor: 2, quality: 50}]}",
         *extra],
        tmp_path,
    )  # fmt: skip


def test_evaluate_baselines_and_codec(reference_ckpt, joint_run, tmp_path) -> None:
    out = evaluate(cfg_eval(tmp_path, reference_ckpt, f"codec_dirs=[{joint_run['dir']}]"))
    rows = out["rows"]
    assert [r["codec"] for r in rows] == ["none", "jpeg", "jpeg", "webp", "avif", "downsample", "downsample_jpeg", "label",
                                          "taskcodec-split-layer4-factorized"]  # fmt: skip
    label = rows[-2]
    # the client runs the reference and sends its answer: the reference's top-1, a size byte + at most a byte
    assert label["top1"] == rows[0]["top1"] and 1 <= label["bytes_per_image"] <= 2
    assert label["client_macs_share"] == 1.0 and label["client_encode_vs_jpeg"] > 0
    assert rows[0]["bytes_per_image"] == 64 * 64 * 3 and rows[0]["n"] == 6
    jpeg10, jpeg75 = rows[1], rows[2]
    assert jpeg10["bytes_per_image"] < jpeg75["bytes_per_image"]
    assert jpeg10["payload_bytes_per_image"] < jpeg10["bytes_per_image"]
    codec = rows[-1]
    assert codec["setting"] == "lmbda=0.03" and codec["est_bytes_per_image"] > 0
    # the split after layer4 runs the whole backbone on the client: more than the reference's MACs
    assert codec["client_macs_share"] > 1.0 and codec["client_encode_vs_jpeg"] > 0
    assert codec["diff_vs_ref"] == pytest.approx(codec["top1"] - rows[0]["top1"])  # paired, same images
    assert codec["diff_ci95_lo"] <= codec["diff_vs_ref"] <= codec["diff_ci95_hi"]
    per_image = json.loads((tmp_path / "rate_accuracy_per_image.json").read_text())
    assert len(per_image["none|raw"]) == 6
    assert codec["payload_bytes_per_image"] < codec["bytes_per_image"]
    header = (tmp_path / "rate_accuracy.csv").read_text().splitlines()[0].split(",")
    assert header == COLUMNS
    assert len(json.loads((tmp_path / "rate_accuracy.json").read_text())) == len(rows)
    assert (tmp_path / "rate_accuracy.png").stat().st_size > 1000
    assert (tmp_path / "client_frontier.png").stat().st_size > 1000  # bytes against client cost
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["git_revision"] and "config" in prov
    assert prov["reference"]["id"] == reference_id(reference_ckpt) and prov["reference"]["top1"] == rows[0]["top1"]
    head = json.loads((tmp_path / "headline.json").read_text())
    assert head["taskcodec-split-layer4-factorized"]["points"][0]["client_macs_share"] > 1.0
    # a later table reuses the reference and baseline rows instead of re-encoding them
    again = evaluate(cfg_eval(tmp_path / "again", reference_ckpt, f"codec_dirs=[{joint_run['dir']}]", f"reuse_baselines={tmp_path}"))
    assert [(r["codec"], r["setting"], r["top1"], r["bytes_per_image"]) for r in again["rows"]] == [
        (r["codec"], r["setting"], r["top1"], r["bytes_per_image"]) for r in rows
    ]
    assert again["rows"][-1]["diff_vs_ref"] == pytest.approx(codec["diff_vs_ref"])


def test_evaluate_train_on_compressed_and_wandb(reference_ckpt, tmp_path) -> None:
    cfg = cfg_eval(tmp_path, reference_ckpt, "baselines={jpeg: [10]}", "wandb.mode=offline",
                   "train_on_compressed={codec: jpeg, setting: 10, epochs: 1}")  # fmt: skip
    rows = evaluate(cfg)["rows"]
    tuned = rows[-1]
    assert tuned["codec"] == "jpeg+finetuned" and tuned["setting"] == rows[1]["setting"]
    assert tuned["bytes_per_image"] == rows[1]["bytes_per_image"]  # same encoder, same bytes
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_evaluate_missing_export(reference_ckpt, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="encoder"):
        evaluate(cfg_eval(tmp_path, reference_ckpt, f"codec_dirs=[{tmp_path}]"))


def table_rows() -> list[dict]:
    """A reference, three JPEG points and one taskcodec point: the headline tests' common table (fresh copies)."""
    return [
        {"codec": "none", "setting": "raw", "bytes_per_image": 12288, "payload_bytes_per_image": 12288, "top1": 0.70},
        {"codec": "jpeg", "setting": "q=10", "bytes_per_image": 500, "payload_bytes_per_image": 200, "top1": 0.50},
        {"codec": "jpeg", "setting": "q=50", "bytes_per_image": 1000, "payload_bytes_per_image": 700, "top1": 0.65},
        {"codec": "jpeg", "setting": "q=90", "bytes_per_image": 2000, "payload_bytes_per_image": 1700, "top1": 0.70},
        {"codec": "taskcodec-latent", "setting": "lmbda=1", "bytes_per_image": 100, "payload_bytes_per_image": 96, "top1": 0.695},
    ]


def test_headline_ratios() -> None:
    rows = [
        *table_rows(),
        {"codec": "taskcodec-latent", "setting": "lmbda=4", "bytes_per_image": 300, "payload_bytes_per_image": 296, "top1": 0.71},
    ]
    h = headline(rows)["taskcodec-latent"]
    assert h["setting"] == "lmbda=1"  # cheapest within 1 point of the reference
    assert 10 < h["x_fewer_than_jpeg"] < 20  # JPEG frontier between q50 and q90 at top-1 0.695
    assert h["webp_bytes"] is None and h["x_fewer_than_best_webp_avif"] is None


def test_headline_compares_parity_points_where_the_standard_curve_is_flat() -> None:
    """JPEG within the margin at q=20 and exact only at q=90: the parity-to-parity ratio uses q=20."""
    rows = [
        {"codec": "none", "setting": "raw", "bytes_per_image": 49152, "payload_bytes_per_image": 49152, "top1": 0.872},
        {"codec": "jpeg", "setting": "q=10", "bytes_per_image": 1087, "payload_bytes_per_image": 800, "top1": 0.853},
        {"codec": "jpeg", "setting": "q=20", "bytes_per_image": 1631, "payload_bytes_per_image": 1300, "top1": 0.8705},
        {"codec": "jpeg", "setting": "q=90", "bytes_per_image": 6172, "payload_bytes_per_image": 5800, "top1": 0.8712},
        {"codec": "taskcodec-latent", "setting": "lmbda=0.1", "bytes_per_image": 18.2, "payload_bytes_per_image": 17, "top1": 0.8708},
    ]
    result = headline(rows)
    assert result["standard_parity"]["jpeg"] == {"setting": "q=20", "bytes": 1631, "diff_vs_ref": pytest.approx(-0.0015)}
    assert "webp" not in result["standard_parity"]  # no WebP rows: no parity point
    h = result["taskcodec-latent"]
    assert h["x_fewer_than_jpeg_at_parity"] == pytest.approx(1631 / 18.2)
    assert h["x_fewer_than_jpeg_payload_at_parity"] == pytest.approx(1300 / 18.2)  # against the point's whole bytes
    assert h["x_fewer_than_jpeg"] > 1.5 * h["x_fewer_than_jpeg_at_parity"]  # interpolated at 0.8708: 3/7 of the way to q=90


def test_headline_points_below_parity() -> None:
    """Without parity there is still a per-setting comparison; no extrapolation below JPEG's range."""
    rows = [
        {"codec": "none", "setting": "raw", "bytes_per_image": 12288, "payload_bytes_per_image": 12288, "top1": 0.70},
        {"codec": "jpeg", "setting": "q=10", "bytes_per_image": 500, "payload_bytes_per_image": 200, "top1": 0.50},
        {"codec": "jpeg", "setting": "q=50", "bytes_per_image": 1000, "payload_bytes_per_image": 700, "top1": 0.60},
        {"codec": "taskcodec-latent", "setting": "lmbda=1", "bytes_per_image": 250, "payload_bytes_per_image": 245, "top1": 0.60},
        {"codec": "taskcodec-latent", "setting": "lmbda=0.1", "bytes_per_image": 100, "payload_bytes_per_image": 95, "top1": 0.30},
    ]
    h = headline(rows)["taskcodec-latent"]
    assert h["reaches_parity"] is False and "x_fewer_than_jpeg" not in h
    cheap, dear = h["points"]
    assert cheap["setting"] == "lmbda=0.1" and cheap["jpeg_bytes"] is None  # below JPEG's measured range
    assert dear["jpeg_bytes"] == pytest.approx(1000) and dear["x_fewer_than_jpeg"] == pytest.approx(4.0)
    assert dear["jpeg_payload_bytes"] == pytest.approx(700)


def _tiny_datamodule(stages=("fit",)):
    """The sample data's 3 classes, 2 hold-out images each, set up for ``stages``."""
    from conftest import SAMPLE

    from datamodules.tiny_imagenet import TinyImageNetDataModule

    dm = TinyImageNetDataModule(root=str(SAMPLE), num_classes=3, holdout_per_class=2, batch_size=4, num_workers=0)
    for stage in stages:
        dm.setup(stage)
    return dm


def test_train_test_grid_2x2(reference_ckpt, tmp_path) -> None:
    """A 2x2 grid (raw, JPEG q=10) on the sample data: well-formed cells, rows, and hold-out selection."""
    from taskcodec.baselines import make_codec

    grid = bench_module("train_test_grid")
    dm = _tiny_datamodule(("fit", "test"))
    codecs = [make_codec("none"), make_codec("jpeg", 10)]
    cells = grid.run_grid(reference_ckpt, dm, codecs, codecs, epochs=1, root_dir=tmp_path)
    assert [(c["train"], c["test"]) for c in cells] == [
        (t, s) for t in ("reference", "raw", "q=10") for s in ("raw", "q=10")
    ]
    for c in cells:
        assert c["n"] == 6 and len(c["correct"]) == 6 and 0 <= c["holdout_top1"] <= 1
        assert c["diff_ci95_lo"] <= c["diff_vs_ref"] <= c["diff_ci95_hi"]
    jpeg_bytes = {c["bytes_per_image"] for c in cells if c["test"] == "q=10"}
    assert len(jpeg_bytes) == 1 and jpeg_bytes.pop() < 64 * 64 * 3  # one encoder, same bytes in every row
    assert all(c["diff_vs_control"] == 0 for c in cells if c["train"] == "raw")
    # selection is by hold-out top-1, whatever the test top-1 says
    for c in cells:
        c["holdout_top1"], c["top1"] = (1.0, 0.0) if c["train"] == "raw" else (0.0, 1.0)
    best = grid.best_cells(cells, ["raw", "q=10"], ["q=10"])
    assert best["q=10"]["train"] == "raw"
    assert grid.best_cells(cells, ["raw", "q=10"], ["q=10"], by="top1")["q=10"]["train"] == "q=10"
    summary = grid.write_outputs(cells, ["reference", "raw", "q=10"], ["raw", "q=10"],
                                 {"jpeg": (["raw", "q=10"], ["q=10"])}, tmp_path / "out", {"title": "t"})  # fmt: skip
    assert summary["best_cell_by_holdout"]["jpeg"]["q=10"]["trained"] == "raw"
    (row,) = json.loads((tmp_path / "out" / "finetuned_rows.json").read_text())
    assert row["codec"] == "jpeg+finetuned" and row["setting"] == "q=10,trained=raw" and len(row["correct"]) == 6
    assert set(COLUMNS) <= set(row)
    assert (tmp_path / "out" / "grid.png").stat().st_size > 1000
    assert (tmp_path / "out" / "grid.csv").read_text().count("\n") == 1 + len(cells)


def test_finetune_classifier_bf16_steps_fp32_weights(reference_ckpt, tmp_path) -> None:
    """The 100-class grid fine-tunes under bf16 autocast: the steps change the weights, which stay fp32."""
    from evaluate import finetune_classifier
    from taskcodec.models import load_image_classifier

    dm = _tiny_datamodule()
    tuned = finetune_classifier(reference_ckpt, dm.train_set, dm.holdout_set, epochs=1, batch_size=4,
                                root_dir=tmp_path, precision="bf16-mixed")  # fmt: skip
    before = load_image_classifier(reference_ckpt).state_dict()
    after = tuned.state_dict()
    assert all(v.dtype == before[k].dtype for k, v in after.items())
    assert any(not torch.equal(v, before[k]) for k, v in after.items() if v.is_floating_point())


def test_finetune_classifier_starts_from_the_ema_weights(reference_ckpt, tmp_path) -> None:
    """The reference is its EMA; fine-tuning (here at lr 0, so nothing moves) starts from those weights."""
    from evaluate import finetune_classifier
    from taskcodec.models import load_image_classifier

    live = {k.removeprefix("classifier."): v for k, v in torch.load(reference_ckpt, weights_only=False)["state_dict"].items()
            if k.startswith("classifier.")}  # fmt: skip
    dm = _tiny_datamodule()
    tuned = finetune_classifier(reference_ckpt, dm.train_set, dm.holdout_set, epochs=1, lr=0.0, batch_size=4, root_dir=tmp_path)
    reference = dict(load_image_classifier(reference_ckpt).named_parameters())
    params = dict(tuned.named_parameters())
    assert params.keys() == reference.keys()
    assert all(torch.equal(v, reference[k]) for k, v in params.items())
    assert any(not torch.equal(v, live[k]) for k, v in params.items())  # the live weights are another model


def _table(top1_ft: dict) -> list[dict]:
    rows = table_rows()
    for (q, b), top1 in zip([("q=10", 500), ("q=50", 1000), ("q=90", 2000)], top1_ft.values(), strict=True):
        rows.append({"codec": "jpeg+finetuned", "setting": f"{q},trained={q}", "bytes_per_image": b,
                     "payload_bytes_per_image": b, "top1": top1})  # fmt: skip
    return rows


def test_headline_fair_peer() -> None:
    """The learned codec against JPEG read by a JPEG-fine-tuned classifier, beside the clean-trained one."""
    h = headline(_table({"q=10": 0.695, "q=50": 0.71, "q=90": 0.72}))["taskcodec-latent"]
    # clean reference: 0.695 lies between q=50 (0.65) and q=90 (0.70), 9/10 of the way in log-bytes
    assert h["jpeg_bytes"] == pytest.approx(1000 * 2**0.9) and h["x_fewer_than_jpeg"] == pytest.approx(10 * 2**0.9)
    # fine-tuned: q=10 already reaches 0.695, so 500 B and 5x
    assert h["jpeg_finetuned_bytes"] == pytest.approx(500) and h["x_fewer_than_jpeg_finetuned"] == pytest.approx(5)
    assert h["points"][0]["x_fewer_than_jpeg_finetuned"] == pytest.approx(5)
    plain = headline(_table({"q=10": 0.1, "q=50": 0.2, "q=90": 0.3}))["taskcodec-latent"]
    assert plain["jpeg_finetuned_bytes"] is None and plain["x_fewer_than_jpeg_finetuned"] is None  # never reaches it


def test_evaluate_extra_rows_and_new_baselines(reference_ckpt, tmp_path) -> None:
    """Reused rows stay, only baselines missing from them are measured; extra rows join (same n only)."""
    from evaluate import join_extra_rows
    from taskcodec.errors import ConfigError

    none = "avif: [], downsample: [], downsample_jpeg: []"  # the (merged) baselines not wanted here
    first = evaluate(cfg_eval(tmp_path / "a", reference_ckpt, f"baselines={{jpeg: [10], webp: [], {none}}}"))["rows"]
    extra = [dict(first[1], codec="jpeg+finetuned", setting="q=10,trained=raw", correct=first[1]["correct"],
                  reference_id=reference_id(reference_ckpt))]  # fmt: skip
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    # W&B on: its table takes reused rows (every column) and newly measured ones (no client columns) together
    cfg = cfg_eval(tmp_path / "b", reference_ckpt, f"reuse_baselines={tmp_path / 'a'}", f"baselines={{jpeg: [10, 75], webp: [50], {none}}}",
                   f"extra_rows=[{tmp_path / 'extra.json'}]", "wandb.mode=offline")  # fmt: skip
    import evaluate as ev

    measured = []
    real = ev.evaluate_baseline
    ev.evaluate_baseline = lambda codec, *a, **k: measured.append((codec.name, codec.setting)) or real(codec, *a, **k)
    try:
        rows = evaluate(cfg)["rows"]
    finally:
        ev.evaluate_baseline = real
    assert measured == [("jpeg", "q=75"), ("webp", "q=50")]  # the reference and q=10 were reused
    assert [(r["codec"], r["setting"]) for r in rows] == [
        ("none", "raw"), ("jpeg", "q=10"), ("jpeg", "q=75"), ("webp", "q=50"), ("jpeg+finetuned", "q=10,trained=raw"),
        ("label", "top-1"),
    ]
    assert rows[1]["top1"] == first[1]["top1"] and rows[-1]["diff_vs_ref"] == pytest.approx(rows[1]["diff_vs_ref"])
    # a re-made extra file replaces that codec's earlier rows instead of duplicating them
    ref = reference_id(reference_ckpt)
    again = join_extra_rows(rows, [tmp_path / "extra.json"], 6, ref)
    assert [r["codec"] for r in again].count("jpeg+finetuned") == 1
    (tmp_path / "short.json").write_text(json.dumps([dict(extra[0], n=5, correct=extra[0]["correct"][:5])]))
    with pytest.raises(ConfigError, match="n=5"):
        join_extra_rows(rows, [tmp_path / "short.json"], 6, ref)
    with pytest.raises(ConfigError, match="does not exist"):
        join_extra_rows(rows, [tmp_path / "missing.json"], 6, ref)
    # bench/train_test_grid.py --peer-only makes the same join on a finished table, re-measuring nothing
    head = bench_module("train_test_grid").fair_peer_headline(tmp_path / "a", tmp_path / "extra.json")
    assert head["reference_top1"] == first[0]["top1"]


def test_evaluate_baseline_without_default_sweep(reference_ckpt, tmp_path) -> None:
    """jpeg_qtable has no default sweep: `baselines={jpeg_qtable: null}` is a config error, not a KeyError."""
    from taskcodec.errors import ConfigError

    cfg = cfg_eval(tmp_path, reference_ckpt, "+baselines.jpeg_qtable=null")
    with pytest.raises(ConfigError, match="jpeg_qtable has no default sweep"):
        evaluate(cfg)


def test_storage_budget_subsets_fit_the_budget() -> None:
    """bench/storage_budget.py: the first k images of every class, k as large as the byte budget allows,
    with real JPEG/PNG file sizes of the sample train images."""
    from conftest import SAMPLE

    from datamodules.tiny_imagenet import TinyImageNetDataModule

    sb = bench_module("storage_budget")
    dm = TinyImageNetDataModule(root=str(SAMPLE), num_classes=3, holdout_per_class=0, batch_size=4, num_workers=0)
    dm.setup("fit")
    labels = np.asarray(dm.train_set.labels)
    _, low = sb.coded_train_set(dm.train_set, "q=10")
    _, png = sb.coded_train_set(dm.train_set, "png")
    assert (png > low).all() and low.min() > 100  # real files: lossless is larger than q=10
    members = [np.flatnonzero(labels == c) for c in range(3)]
    assert sb.first_k_per_class(labels, low, float(low.sum()))[0] == min(len(m) for m in members)  # the bench's budget
    budget = float(sum(png[m[:2]].sum() for m in members))  # two PNGs per class fit, by construction
    k_low, idx_low = sb.first_k_per_class(labels, low, budget)
    k_png, idx_png = sb.first_k_per_class(labels, png, budget)
    assert k_png == 2 and png[idx_png].sum() <= budget and low[idx_low].sum() <= budget
    assert k_low > k_png  # the same budget holds more low-quality images
    assert np.bincount(labels[idx_png]).tolist() == [k_png] * 3  # balanced over classes
    over = np.concatenate([m[: k_png + 1] for m in members])
    assert png[over].sum() > budget  # k is the largest that fits


def test_evaluate_refuses_rows_of_another_reference(reference_ckpt, tmp_path) -> None:
    """One table, one reference: reused tables and extra rows measured against another classifier are refused."""
    import torch

    from evaluate import join_extra_rows
    from taskcodec.errors import ConfigError

    base = "baselines={jpeg: [10], webp: [], avif: [], downsample: [], downsample_jpeg: []}"
    first = evaluate(cfg_eval(tmp_path / "a", reference_ckpt, base))["rows"]
    other = tmp_path / "other.ckpt"  # the same run with one weight changed: another reference
    ckpt = torch.load(reference_ckpt, weights_only=True)
    for k in [k for k in ckpt["state_dict"] if k.endswith("fc.bias")]:
        ckpt["state_dict"][k] = ckpt["state_dict"][k] + 1.0
    torch.save(ckpt, other)
    assert reference_id(str(other)) != reference_id(reference_ckpt)
    with pytest.raises(ConfigError, match="one table, one reference"):
        evaluate(cfg_eval(tmp_path / "b", str(other), base, f"reuse_baselines={tmp_path / 'a'}"))
    row = dict(first[1], codec="jpeg+finetuned", reference_id=reference_id(str(other)))
    (tmp_path / "x.json").write_text(json.dumps([row]))
    with pytest.raises(ConfigError, match="one table, one reference"):
        join_extra_rows(first, [tmp_path / "x.json"], 6, reference_id(reference_ckpt))
    (tmp_path / "y.json").write_text(json.dumps([{k: v for k, v in row.items() if k != "reference_id"}]))
    with pytest.raises(ConfigError, match="unnamed"):
        join_extra_rows(first, [tmp_path / "y.json"], 6, reference_id(reference_ckpt))


def test_headline_says_which_codecs_beat_the_label_row() -> None:
    rows = [
        *table_rows(),
        {"codec": "label", "setting": "top-1", "bytes_per_image": 1.5, "payload_bytes_per_image": 0.5, "top1": 0.70,
         "client_macs_share": 1.0},
        {"codec": "taskcodec-split", "setting": "lmbda=1", "bytes_per_image": 8, "payload_bytes_per_image": 7,
         "top1": 0.70, "client_macs_share": 1.08},
        {"codec": "taskcodec-light", "setting": "lmbda=1", "bytes_per_image": 30, "payload_bytes_per_image": 29,
         "top1": 0.70, "client_macs_share": 0.05},
    ]  # fmt: skip
    h = headline(rows)
    assert h["taskcodec-split"]["beats_label"] is False  # whole classifier on the client, more bytes than its answer
    assert h["taskcodec-light"]["beats_label"] is True and h["taskcodec-light"]["lighter_client_than_label"] is True
    assert h["taskcodec-light"]["fewer_bytes_than_label"] is False
    assert h["best_light_client"]["codec"] == "taskcodec-light" and h["best_light_client"]["bytes_per_image"] == 30
    short = headline([*rows[:-1], dict(rows[-1], top1=0.60)])["taskcodec-light"]
    assert short["reaches_parity"] is False and short["beats_label"] is False  # short of parity never beats it


def test_rows_that_would_share_a_label_are_refused() -> None:
    """A client trained with extra classes is labelled apart; two exports making one row are refused."""
    from evaluate import check_distinct_labels
    from taskcodec.errors import ConfigError
    from taskcodec.evaluation import codec_label

    cfg = {"channels": [8, 16], "kernel": 3, "act": "relu", "split": "layer1", "entropy": "factorized"}
    meta = {"distill": 0.5, "recipe": "two-stage", "lmbda": 1}
    plain, extra = codec_label("light", cfg, meta), codec_label("light", cfg, meta | {"extra_classes": 90})
    assert extra[0] == plain[0] + "+x90" and extra[1] == plain[1]
    augmented = codec_label("light", cfg, meta | {"augment_policy": "trivialaugment"})
    assert augmented[0] == plain[0] + "+trivialaugment"
    check_distinct_labels([(Path("a"), plain), (Path("b"), augmented)])
    wide = codec_label("light", cfg | {"N": 192}, meta)  # a wider server decoder, the same client
    assert wide[0] == plain[0].replace("-layer1-factorized", "-layer1-factorized-n192")
    check_distinct_labels([(Path("a"), plain), (Path("b"), extra)])
    with pytest.raises(ConfigError, match="both make the row"):
        check_distinct_labels([(Path("a"), plain), (Path("b"), plain)])


def test_transfer_table_pairs_a_frozen_client_with_the_same_codec_trained_on_b() -> None:
    """bench/transfer_table.py compares A's frozen client with B's client of the same codec and setting."""
    pair = bench_module("transfer_table").trained_counterpart
    light, split = "taskcodec-light-8x16x32k3relu-layer1-factorized+kd+2stage", "taskcodec-split-layer4-hyperprior+kd"
    trained = [{"codec": split, "setting": "lmbda=1"}, {"codec": light, "setting": "lmbda=1"}, {"codec": split, "setting": "lmbda=0.3"}]
    assert pair(light + "+adapted", "lmbda=1", trained)["codec"] == light  # not the split row of the same λ
    assert pair(split + "+adapted-linear", "lmbda=1", trained)["codec"] == split
    assert pair("taskcodec-other+adapted", "lmbda=0.3", trained)["codec"] == split  # the only row at that λ
    assert pair("taskcodec-other+adapted", "lmbda=1", trained) is None  # ambiguous: no pairing
    assert pair(light + "+adapted", "lmbda=3", trained) is None


def test_learning_curves_reads_holdout_and_train_top1_across_resumed_logs(tmp_path) -> None:
    """bench/learning_curves.py joins a run's resumed CSV logs per epoch, with the train top-1 beside the hold-out one."""
    from taskcodec.errors import DataError

    lc = bench_module("learning_curves")
    run = tmp_path / "logs" / "light" / "c1" / "task"
    head = "epoch,step,time/elapsed_s,train/acc,train/loss,val/acc,val/loss,test/acc,test/top5\n"
    (run / "csv").mkdir(parents=True)
    (run / "csv" / "metrics.csv").write_text(head + "0,5,,,2.0,,,,\n0,9,10.0,,,0.40,1.5,,\n0,9,,0.50,,,,,\n")
    (run / "csv" / "resumed_1").mkdir()
    (run / "csv" / "resumed_1" / "metrics.csv").write_text(head + "1,19,20.0,,,0.45,1.4,,\n1,19,,0.80,,,,,\n2,20,,,,,,0.44,0.9\n")
    r = lc.read_run(run)
    assert r["run"] == "light/c1/task" and not r["finished"] and r["wall_time_s"] == 20.0
    assert [(c["holdout_top1"], c["train_top1"]) for c in r["curve"]] == [(0.40, 0.50), (0.45, 0.80)]
    assert r["best_holdout_epoch"] == 1 and r["test"] == {"top1": 0.44, "top5": 0.9}
    import sys

    argv = sys.argv
    sys.argv = ["learning_curves.py", "--out", str(tmp_path / "out"), str(tmp_path / "nothing")]
    try:
        with pytest.raises(DataError, match="no run folder"):
            lc.main()
    finally:
        sys.argv = argv


def test_paired_rows_compares_two_rows_of_one_table_image_by_image(tmp_path) -> None:
    """bench/paired_rows.py: A minus B on the same images, with an interval; an unknown row is a DataError."""
    from taskcodec.errors import DataError

    compare = bench_module("paired_rows").compare
    rows = [{"codec": "a", "setting": "s", "top1": 0.75, "bytes_per_image": 50.0},
            {"codec": "b", "setting": "s", "top1": 0.5, "bytes_per_image": 100.0}]  # fmt: skip
    (tmp_path / "rate_accuracy.json").write_text(json.dumps(rows))
    (tmp_path / "rate_accuracy_per_image.json").write_text(json.dumps({"a|s": "1101" * 50, "b|s": "1001" * 50}))
    (q,) = compare(tmp_path, [("a|s", "b|s")])
    assert q["diff"] == pytest.approx(0.25) and q["bytes_ratio"] == pytest.approx(0.5) and q["images"] == 200
    assert q["diff_ci95"][0] > 0.15 and q["diff_ci95"][1] < 0.35  # B is never right where A is wrong: a tight interval
    with pytest.raises(DataError, match="has no row"):
        compare(tmp_path, [("a|s", "c|s")])
    with pytest.raises(DataError, match="run evaluate.py"):
        compare(tmp_path / "missing", [("a|s", "b|s")])


def test_paired_rows_pairs_rows_of_two_tables_only_on_the_same_reference_and_images(tmp_path) -> None:
    """TABLE::codec|setting names a row of another table (two runs with one label); refused unless one reference, same images."""
    from taskcodec.errors import DataError

    compare = bench_module("paired_rows").compare

    def table(name: str, ref_id: str, ref_bits: str, a_bits: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        rows = [{"codec": "none", "setting": "raw", "top1": 0.5, "bytes_per_image": 100.0},
                {"codec": "a", "setting": "s", "top1": a_bits.count("1") / len(a_bits), "bytes_per_image": 10.0}]  # fmt: skip
        (d / "rate_accuracy.json").write_text(json.dumps(rows))
        (d / "rate_accuracy_per_image.json").write_text(json.dumps({"none|raw": ref_bits, "a|s": a_bits}))
        (d / "headline.json").write_text(json.dumps({"reference": {"id": ref_id}}))
        return d

    short, long = table("short", "r1", "10" * 50, "1000" * 25), table("long", "r1", "10" * 50, "1100" * 25)
    (q,) = compare(long, [("a|s", f"{short}::a|s")])
    assert q["diff"] == pytest.approx(0.25) and q["b"] == f"{short}::a|s" and q["images"] == 100
    other_ref = table("other", "r2", "10" * 50, "1000" * 25)
    with pytest.raises(DataError, match="same reference on the same images"):
        compare(long, [("a|s", f"{other_ref}::a|s")])
    other_images = table("shuffled", "r1", "01" * 50, "1000" * 25)
    with pytest.raises(DataError, match="same reference on the same images"):
        compare(long, [("a|s", f"{other_images}::a|s")])
    with pytest.raises(DataError, match="has no row"):
        compare(long, [("a|s", f"{short}::b|s")])


def test_unseen_classes_codes_both_clients_for_real_and_pairs_them(tmp_path, monkeypatch) -> None:
    """bench/unseen_classes.py: both exports coded on the same images, the paired difference, the 3 pt / 1.5x target."""
    import sys

    from conftest import SAMPLE
    from tiny_codec import export_tiny

    from taskcodec.curves import paired_difference
    from taskcodec.errors import ConfigError

    bench = bench_module("unseen_classes")
    trained = {"correct": [True] * 90 + [False] * 10, "bytes_per_image": 20.0}
    close = {"correct": [True] * 88 + [False] * 12, "bytes_per_image": 29.0}
    far = {"correct": [True] * 80 + [False] * 20, "bytes_per_image": 20.0}
    assert bench.compare(trained, close)["target_met"]  # -2 pt at 1.45x
    assert not bench.compare(trained, far)["target_met"] and not bench.compare(trained, far)["within_margin"]
    costly = bench.compare(trained, {**close, "bytes_per_image": 31.0})
    assert costly["within_margin"] and not costly["within_bytes"] and not costly["target_met"]

    export_tiny(tmp_path / "trained", "split")
    export_tiny(tmp_path / "adapted", "light", channels=[8, 16, 32], kernel=3, act="relu", entropy="factorized")
    out = tmp_path / "out"
    argv = ["unseen_classes.py", "--data", str(SAMPLE), "--first-class", "0", "--num-classes", "3", "--threads", "1",
            "--trained", str(tmp_path / "trained"), "--adapted", str(tmp_path / "adapted"), str(tmp_path / "adapted2"),
            "--out", str(out)]  # fmt: skip
    export_tiny(tmp_path / "adapted2", "split", split="layer2")
    (tmp_path / "adapted2" / "adapt.json").write_text(json.dumps({"teacher": "t.ckpt", "distill": 0.5}))
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    r = json.loads((out / "unseen.json").read_text())
    assert r["test_images"] == len(r["per_image"]["trained"]) > 0
    light, kd = r["adapted"]  # each adapted folder, in order, compared with the trained client
    assert light["adapt"] is None and kd["adapt"]["teacher"] == "t.ckpt"
    assert r["trained"]["codec"].startswith("taskcodec-split") and light["codec"].startswith("taskcodec-light")
    for row, correct in zip(r["adapted"], r["per_image"]["adapted"], strict=True):
        assert row["bytes_per_image"] > 1 and row["comparison"]["diff_vs_trained"] == json.loads(
            json.dumps(paired_difference(correct, r["per_image"]["trained"])))  # fmt: skip
    md = (out / "unseen.md").read_text()
    assert "frozen minus trained" in md and "--teacher" in md and md.count("| frozen, from other classes") == 2
    export_tiny(tmp_path / "adapted", "split")  # a second pair in one folder: which one is meant?
    with pytest.raises(ConfigError, match="exactly one"):
        bench.main()


def test_unseen_bench_names_each_server_kind() -> None:
    """bench/unseen_classes.py labels a row by how adapt trained its server (a linear probe is not a CE server)."""
    server_of = bench_module("unseen_classes").server_of
    assert server_of({"server": "tail", "teacher": None}) == "`taskcodec adapt` (CE)"
    assert server_of({"server": "tail", "teacher": "t.ckpt", "distill": 0.5}) == "`taskcodec adapt --teacher` (KD 0.5)"
    assert "--server linear" in server_of({"server": "linear", "teacher": None})
    assert server_of(None) == "`taskcodec adapt`"
