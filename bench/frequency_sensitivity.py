"""Frequency sensitivity of the reference classifier and of a learned codec, and JPEG tables from it.

    python bench/frequency_sensitivity.py --classifier-ckpt logs/reference/10cls/checkpoints/best.ckpt \
        --encoder logs/split_sweep/10cls/layer4_hyper_hi/0/export/encoder-68b26df7fb00ad2a.pt \
        --decoder logs/split_sweep/10cls/layer4_hyper_hi/0/export/decoder-68b26df7fb00ad2a.pt \
        --out results/frequency_10cls [--n-images 100] [--codec-n-images 50]

On a busy 2-core machine the stages can run apart (each run is appended to provenance.json):
``--maps reference --no-rate``, ``--maps codec --no-rate``, then ``--maps`` (no maps: read them).

1. Sensitivity maps (`taskcodec.analysis.frequency`) on a stratified, seeded sample of the test
   images, for the reference classifier and for the learned codec's whole pipeline (x -> real
   range-coded records -> decoder logits): ``sensitivity_{reference,codec}.json`` + heat maps.
   ``--maps`` says which to measure now; the others are read from ``--out``.
2. JPEG tables from the reference map: ``qtables.json`` (gamma 1) and ``qtables_gamma0.5.json``.
3. Rate-accuracy on all test images, reference classifier: libjpeg's standard tables (4:2:0, the
   ``jpeg`` rows, and 4:4:4, ``jpeg_444``) against ``jpeg_qtable`` (4:4:4, as the chroma map is
   full-resolution; ``jpeg_qtable`` is gamma 1, ``jpeg_qtable_g0.5`` gamma 0.5), with paired
   differences from the uncompressed reference: ``rate_accuracy.{csv,json,png}``, and
   ``comparison.json``: each qtable point's bytes against the standard-table curves at its top-1
   (interpolated on their frontier), and its paired top-1 difference from the cheapest standard
   point with at least as many bytes (same images, bootstrap 95% interval).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datamodules.tiny_imagenet import TinyImageNetDataModule  # noqa: E402
from taskcodec.analysis.frequency import derive_qtables, frequency_sensitivity, plot_maps  # noqa: E402
from taskcodec.baselines import make_codec  # noqa: E402
from taskcodec.curves import bytes_at_accuracy, paired_difference  # noqa: E402
from taskcodec.evaluation import (  # noqa: E402
    add_paired,
    code_and_classify,
    evaluate_baseline,
    plot_rate_accuracy,
    write_table,
)
from taskcodec.export import load_decoder, load_encoder  # noqa: E402
from taskcodec.models import load_image_classifier  # noqa: E402
from taskcodec.provenance import bench_parser, run_provenance, start_bench, write_json  # noqa: E402

TABLES = {"qtables.json": 1.0, "qtables_gamma0.5.json": 0.5}


def record_run(out: Path, args: argparse.Namespace) -> None:
    """Append this finished run to provenance.json (stages may be separate runs into one folder)."""
    old = json.loads(prov.read_text()) if (prov := out / "provenance.json").is_file() else {"runs": []}
    runs = old.get("runs", [old])  # a single-run file from before runs were listed is the first run
    write_json(prov, {"runs": [*runs, run_provenance(args=vars(args))]})


def stratified_sample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` images, the same number from each class (seeded)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = n // len(classes)
    return np.sort(
        np.concatenate([rng.choice(np.flatnonzero(labels == c), per, replace=False) for c in classes])
    )


def sensitivity_maps(args, images, labels, out: Path) -> dict:
    classifier = load_image_classifier(args.classifier_ckpt)
    models = {"reference": lambda x: classifier(x)}
    if "codec" in args.maps:
        encoder, _ = load_encoder(args.encoder)
        decoder, _ = load_decoder(args.decoder)
        models["codec"] = lambda x: code_and_classify(encoder, decoder, x)["logits"]
    results = {}
    for name, fn in ((n, f) for n, f in models.items() if n in args.maps):
        idx = stratified_sample(labels, args.codec_n_images if name == "codec" else args.n_images, args.seed)
        t = time.time()
        res = frequency_sensitivity(fn, images[idx], labels[idx], args.delta, args.seed, progress=print)
        res |= {"model": name, "image_indices": idx.tolist(), "seconds": round(time.time() - t, 1)}
        if name == "codec":
            res |= {"encoder": args.encoder, "decoder": args.decoder}
        else:
            res["classifier_ckpt"] = args.classifier_ckpt
        write_json(out / f"sensitivity_{name}.json", res)
        results[name] = res
        print(f"{name}: {res['seconds']} s, unperturbed top-1 {res['top1_unperturbed']:.3f}")
    return results


def map_agreement(a: dict, b: dict, metric: str = "mean_l1") -> float:
    """Spearman rank correlation of two maps over all 192 (channel, i, j) entries."""
    ra = np.argsort(np.argsort(np.ravel(a["maps"][metric])))
    rb = np.argsort(np.argsort(np.ravel(b["maps"][metric])))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    p = bench_parser(
        __doc__, out="results/frequency_10cls", threads=int(os.environ.get("OMP_NUM_THREADS", "1"))
    )
    p.add_argument("--classifier-ckpt", required=True)
    p.add_argument("--encoder")
    p.add_argument("--decoder")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--n-images", type=int, default=100, help="sample for the 192-perturbation sweeps")
    p.add_argument(
        "--delta", type=float, default=128.0, help="coefficient change, orthonormal DCT, 0..255 units"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metric", default="mean_l1", help="map the tables are derived from")
    p.add_argument("--qualities", type=int, nargs="+", default=[5, 10, 20, 30, 50, 75, 90])
    p.add_argument("--codec-n-images", type=int, help="sample for the codec's sweep (default: --n-images)")
    p.add_argument(
        "--maps", nargs="*", default=["reference", "codec"], choices=["reference", "codec"],
        help="maps to measure now; the others are read from sensitivity_*.json in --out",
    )  # fmt: skip
    p.add_argument("--no-rate", action="store_true", help="stop after the maps (no tables, no rate-accuracy)")
    args = p.parse_args()
    start_bench(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    dm = TinyImageNetDataModule(root=args.data, num_classes=args.num_classes, num_workers=0)
    dm.setup("test")
    images, labels = dm.test_set.images, np.asarray(dm.test_set.labels)
    args.codec_n_images = args.codec_n_images or args.n_images
    if "codec" in args.maps and not (args.encoder and args.decoder):
        p.error("the codec map needs --encoder and --decoder (or --maps reference)")
    results = sensitivity_maps(args, images, labels, out)
    for n in ("reference", "codec"):
        if n not in results and (f := out / f"sensitivity_{n}.json").is_file():
            results[n] = json.loads(f.read_text())
    for name, res in results.items():
        for metric in ("mean_l1", "top1_drop"):
            plot_maps(res, metric, str(out / f"sensitivity_{name}_{metric}.png"),
                      f"{name}: {metric}, ±{res['delta']:g} per block, n={res['n_images']}")  # fmt: skip
    if args.no_rate:
        return record_run(out, args)

    for fname, gamma in TABLES.items():
        tables = derive_qtables(results["reference"], args.metric, gamma)
        tables["source"] = "sensitivity_reference.json"
        write_json(out / fname, tables)

    classifier = load_image_classifier(args.classifier_ckpt)
    rows = [evaluate_baseline(make_codec("none", None), classifier, images, labels)]
    series = [("jpeg", "jpeg", {}), ("jpeg_444", "jpeg", {"subsampling": "4:4:4"})]
    series += [
        (f"jpeg_qtable{'' if g == 1 else f'_g{g:g}'}", "jpeg_qtable", {"tables": str(out / f)})
        for f, g in TABLES.items()
    ]
    for label, name, extra in series:
        for q in args.qualities:
            row = evaluate_baseline(make_codec(name, {"quality": q, **extra}), classifier, images, labels)
            row["codec"] = label
            rows.append(row)
            print(
                f"{label:>18} {row['setting']:>22}: {row['bytes_per_image']:8.1f} B  top-1 {row['top1']:.3f}"
            )
    add_paired(rows)
    write_table(rows, out, "rate_accuracy")
    plot_rate_accuracy(
        rows, out / "rate_accuracy.png", f"JPEG tables from classifier sensitivity, n={len(labels)}"
    )

    comparison = {"top1_unperturbed_all": rows[0]["top1"], "points": []}
    if "codec" in results:
        comparison["spearman_reference_vs_codec_mean_l1"] = map_agreement(
            results["reference"], results["codec"]
        )
    for r in rows:
        if not r["codec"].startswith("jpeg_qtable"):
            continue
        entry = {
            k: r[k]
            for k in (
                "codec",
                "setting",
                "bytes_per_image",
                "top1",
                "diff_vs_ref",
                "diff_ci95_lo",
                "diff_ci95_hi",
            )
        }
        for std in ("jpeg", "jpeg_444"):
            b = bytes_at_accuracy(
                [(s["bytes_per_image"], s["top1"]) for s in rows if s["codec"] == std], r["top1"], strict=True
            )
            entry[f"{std}_bytes_at_same_top1"] = b
            entry[f"{std}_bytes_ratio"] = b / r["bytes_per_image"] if b else None
            # paired on the same images: the cheapest standard point with at least as many bytes
            peer = min((s for s in rows if s["codec"] == std and s["bytes_per_image"] >= r["bytes_per_image"]),
                       key=lambda s: s["bytes_per_image"], default=None)  # fmt: skip
            if peer is not None:
                d = paired_difference(r["correct"], peer["correct"])
                entry[f"paired_vs_{std}"] = {
                    "setting": peer["setting"], "bytes_per_image": peer["bytes_per_image"], "top1": peer["top1"],
                    "diff": d["diff"], "bootstrap_ci95": d["bootstrap_ci95"],
                }  # fmt: skip
        comparison["points"].append(entry)
    write_json(out / "comparison.json", comparison)
    record_run(out, args)
    print(json.dumps(comparison, indent=1))


if __name__ == "__main__":
    main()
