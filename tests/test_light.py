"""The light client family: cost, real coding, the two-stage recipe (features, then a frozen client)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CPU, DATA, SAMPLE, compose_cfg
from tiny_codec import export_tiny, tiny_codec

from taskcodec.cost import classifier_macs, client_macs, encode_throughput
from taskcodec.errors import CheckpointError, ConfigError
from taskcodec.models import ImageClassifier, create_codec, load_image_classifier
from taskcodec.models.light import FeatureTeacher


def test_client_runs_none_of_the_classifier_and_costs_a_few_percent() -> None:
    codec = create_codec("light", num_classes=10).eval()
    ref = classifier_macs(ImageClassifier("resnet18", 10), (64, 64))
    share = client_macs(codec, (64, 64)) / ref
    assert 0.02 < share < 0.10  # the default client: ~7.7% of resnet18's MACs at 64x64
    small = create_codec("light", num_classes=10, channels=[8, 16, 32], kernel=3).eval()
    assert client_macs(small, (64, 64)) < client_macs(codec, (64, 64)) / 3
    # the client holds no classifier stage: every reference weight is on the server side
    assert not any(n.startswith(("g_a.layer", "g_a.conv1")) for n, _ in codec.named_parameters())


def test_client_share_counts_both_sides_at_the_size_the_model_reads() -> None:
    """evaluate.py's client column at 128 px (Imagenette): the client's MACs at 128, as the reference's, so the share
    is the same as at 64 px (it was 0.26% instead of 1.0%, client counted at 64 against a reference at 128)."""
    from taskcodec.evaluation import taskcodec_client_columns

    codec = create_codec("light", num_classes=10, channels=[8, 16, 32], kernel=3, act="relu", entropy="factorized").eval()
    ref = ImageClassifier("resnet18", 10)
    at_64 = client_macs(codec, (64, 64)) / classifier_macs(ref, (64, 64))
    cols = taskcodec_client_columns(codec, classifier_macs(ref, (128, 128)), (128, 128))
    assert cols["client_macs"] == 4 * client_macs(codec, (64, 64))
    assert cols["client_macs_share"] == pytest.approx(at_64, rel=0.01) and 0.005 < at_64 < 0.02


@pytest.mark.parametrize("entropy", ["factorized", "hyperprior"])
def test_real_coding_gives_the_training_latents_and_logits(entropy: str) -> None:
    codec = tiny_codec("light", entropy=entropy, channels=[8, 8], split="layer1")
    x = torch.rand(3, 3, 64, 64)
    records = codec.encode(x)
    out = codec.decode(records)
    ref = codec(x)
    assert torch.equal(out["y_hat"], ref["y_hat"])
    assert torch.allclose(out["logits"], ref["logits"], atol=1e-5)
    assert min(len(r) for r in records) > 1


def test_features_match_the_teachers_depths(reference_ckpt: str) -> None:
    codec = create_codec("light", num_classes=3, channels=[8, 8], M=8, split="layer2")
    codec.init_from_reference(reference_ckpt)
    teacher = FeatureTeacher(load_image_classifier(reference_ckpt), codec)
    x = torch.rand(2, 3, 64, 64)
    s, t = codec(x)["features"], teacher(x)["features"]
    assert [f.shape for f in s] == [f.shape for f in t]  # layer2, layer3, layer4 outputs
    assert len(s) == 3
    # the teacher's logits are the reference's own
    assert torch.allclose(teacher(x)["logits"], load_image_classifier(reference_ckpt)(x), atol=1e-5)


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ConfigError, match="channels"):
        create_codec("light", channels=[])
    with pytest.raises(ConfigError, match="act"):
        create_codec("light", act="tanh")
    with pytest.raises(ConfigError, match="not a stage"):
        create_codec("light", split="layer9")
    with pytest.raises(ConfigError, match="server"):
        create_codec("light", server="mlp")


def test_linear_server_is_a_probe_on_the_pooled_latent(tmp_path, reference_ckpt: str) -> None:
    """`taskcodec adapt --server linear` on a light export: one linear layer on what the client sends."""
    from taskcodec.adapt import server_codec

    _, enc, _ = export_tiny(tmp_path, "light", channels=[8, 8], split="layer1")
    codec, meta = server_codec(enc, num_classes=2, server="linear")
    assert codec.config["server"] == "linear" and meta["family"] == "light"
    M = codec.latent_channels
    assert sum(p.numel() for p in codec.tail.parameters()) == (M + 1) * 2 and not list(codec.g_s.parameters())
    client = tiny_codec("light", channels=[8, 8], split="layer1").eval()
    y = client.encode(torch.rand(2, 3, 64, 64))
    logits = codec.eval().decode(y)["logits"]
    assert logits.shape == (2, 2)
    assert "server" not in create_codec("light", num_classes=3).config  # the default server keeps old ids
    with pytest.raises(ConfigError, match="no classifier tail"):
        create_codec("light", num_classes=3, server="linear").init_from_reference(reference_ckpt)


def test_two_stage_recipe_freezes_the_client(reference_ckpt: str, tmp_path) -> None:
    """Stage 1 trains on features (needs a teacher); stage 2 leaves the client's bytes untouched."""
    from train import train

    light = ["model/codec=light", "model.codec.channels=[8,8]", "model.codec.M=8", "model.codec.N=16"]
    common = [*DATA, *CPU, *light, "logger=csv", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
              "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", f"reference_table={tmp_path}/none.csv",
              f"model.reference_ckpt={reference_ckpt}"]  # fmt: skip
    s1 = train(compose_cfg("train.yaml", [*common, "experiment=light_features"], tmp_path / "s1"))
    s2 = train(compose_cfg("train.yaml", [*common, "experiment=light_task", f"model.init_codec={s1['final_ckpt']}"],
                           tmp_path / "s2"))  # fmt: skip
    a = torch.load(s1["final_ckpt"], weights_only=True)["taskcodec"]["state_dict"]
    b = torch.load(s2["final_ckpt"], weights_only=True)["taskcodec"]["state_dict"]
    client = [k for k in a if k.startswith(("g_a.", "entropy."))]
    server = [k for k in a if k.startswith("g_s.")]
    assert client and all(torch.equal(a[k], b[k]) for k in client)
    assert not all(torch.equal(a[k], b[k]) for k in server)
    assert s1["test/bytes_per_image"] == s2["test/bytes_per_image"]
    # stage 2 from a checkpoint of another configuration is refused with a clear error
    with pytest.raises(CheckpointError, match="same model.codec"):
        train(compose_cfg("train.yaml", [*common, "experiment=light_task", f"model.init_codec={s1['final_ckpt']}",
                                         "model.codec.M=4"], tmp_path / "s3"))  # fmt: skip


def test_features_objective_needs_a_family_with_features(reference_ckpt: str, tmp_path) -> None:
    from train import train

    cfg = compose_cfg("train.yaml", [*DATA, *CPU, "model.objective=features", f"model.reference_ckpt={reference_ckpt}",
                                     "logger=csv"], tmp_path)  # fmt: skip
    with pytest.raises(ConfigError, match="model/codec=light"):
        train(cfg)


def test_encode_throughput_reports_both_sides() -> None:
    codec = tiny_codec("light", channels=[8, 8])
    images = (np.random.default_rng(0).random((8, 64, 64, 3)) * 255).astype(np.uint8)
    res = encode_throughput(codec, images, batch=4, repeats=1)
    assert res["images"] == 8
    assert res["client_encode_vs_jpeg"] == pytest.approx(res["client_encode_images_per_s"] / res["jpeg_encode_images_per_s"])


def test_label_records_round_trip_and_cost_about_a_byte() -> None:
    from taskcodec.label import LabelCodec

    for k in (2, 10, 100, 1000):
        codec = LabelCodec(k)
        sizes = []
        for label in range(0, k, max(1, k // 37)):
            record = codec.encode(label)
            assert codec.decode(record) == label
            sizes.append(len(record))
        assert max(sizes) <= 1 + -(-k.bit_length() // 8) + 1  # size byte + about log2(k) bits
    with pytest.raises(ConfigError):
        LabelCodec(10).encode(10)


def test_unlabelled_images_train_only_the_label_free_terms() -> None:
    """UNLABELED images add nothing to the cross-entropy; distillation and the rate still see them."""
    from taskcodec.losses import UNLABELED, RateTaskLoss, labelled_cross_entropy

    torch.manual_seed(0)
    logits, teacher = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3)
    labels = torch.tensor([0, 2, UNLABELED, UNLABELED])
    assert torch.isclose(labelled_cross_entropy(logits, labels), F.cross_entropy(logits[:2], labels[:2]))
    none = labelled_cross_entropy(logits, torch.full((4,), UNLABELED))
    assert none.item() == 0.0 and none.requires_grad  # a batch of extra images only: no NaN
    out = {"logits": logits, "rate_bits": torch.full((4,), 80.0)}
    loss = RateTaskLoss(lmbda=1.0, distill=0.5)(out, torch.full((4,), UNLABELED), 64, teacher_logits=teacher)
    assert loss["kd"] > 0 and torch.isfinite(loss["loss"])
    loss["loss"].backward()
    assert logits.grad.abs().sum() > 0  # the KD term trains on images without labels


def test_extra_classes_train_the_joint_codec_and_are_refused_by_the_reference(tmp_path) -> None:
    from train import train

    common = [f"data.root={SAMPLE}", "data.num_classes=2", "data.extra_classes=1", "data.holdout_per_class=2",
              "data.batch_size=4", "data.num_workers=0", *CPU, "logger=csv", "trainer.max_epochs=1",
              "trainer.limit_val_batches=1", "test=false", "export=false", "reference_table=null"]  # fmt: skip
    result = train(compose_cfg("train.yaml", [*common, "model/codec=light", "model.codec.channels=[8,8]",
                                              "model.codec.M=8", "model.codec.N=16",
                                              "data.augment_policy=trivialaugment"], tmp_path / "codec"))  # fmt: skip
    assert (tmp_path / "codec" / "result.json").is_file() and result["final_ckpt"]
    from taskcodec.export import codec_from_checkpoint

    _, meta = codec_from_checkpoint(result["final_ckpt"])  # what tables label the client by
    assert meta["extra_classes"] == 1 and meta["augment_policy"] == "trivialaugment"
    with pytest.raises(ConfigError, match="extra_classes"):
        train(compose_cfg("train.yaml", [*common, "experiment=reference"], tmp_path / "ref"))
