"""The results as documents: every generated table of README.md and docs/*.md, and results/README.md.

    python bench/results_docs.py            # rewrite the generated blocks and results/README.md from results/
    python bench/results_docs.py --check    # exit 1, naming the files, if any is out of step (tests/test_docs.py)

A generated block sits between two markers; the first names what the block shows, so a page chooses
its tables and this script needs no edit to add one::

    <!-- generated: rates results/light_10cls taskcodec label -->
    ...the table...
    <!-- end generated -->

Kinds: ``summary`` (the README's results table, one row per entry of :data:`SUMMARY`), ``rates FOLDER
[CODEC_PREFIX ...]`` (rows of an evaluate.py table), ``include FILE`` (a Markdown table a bench script
wrote), ``run FOLDER`` (what a ``train.py`` run printed, from its ``result.json``) and ``serve-load FILE``.
Everything between the markers is replaced, so a number edited by hand there does not survive.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

from taskcodec.evaluation import standard_parity
from taskcodec.provenance import bench_parser

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- generated: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)
C1 = "taskcodec-light-8x16x32k3relu-layer1-factorized"
C1S16 = "taskcodec-light-8x16x32x32k3relu-layer1-factorized"  # c1 with a fourth stride-2 conv

#: the README's results table: (dataset, setting, results folder, codec row, setting, page); a new dataset
#: or setting is one more entry here
SUMMARY: list[tuple[str, str, str, str, str, str]] = [
    ("Tiny ImageNet, 10 classes", "light client c1, 66 + 33 epochs", "light_steps_10cls", f"{C1}+kd+2stage", "lmbda=1",
     "docs/light-client.md"),
    ("Tiny ImageNet, 10 classes", "light client c1, 20 + 10 epochs", "light_10cls", f"{C1}+kd+2stage", "lmbda=1",
     "docs/light-client.md"),
    ("Tiny ImageNet, 10 classes", "split codec after `layer4` (heavy client)", "light_10cls", "taskcodec-split-layer4-hyperprior+kd",
     "lmbda=0.1", "docs/light-client.md"),
    ("Imagenette, 10 classes, 128 px", "light client c1, 8 + 4 epochs", "imagenette", f"{C1}+kd+2stage", "lmbda=1",
     "docs/imagenette.md"),
    ("Imagenette, 10 classes, 128 px", "light client c1s16 (8×8 latent), 8 + 4 epochs", "imagenette_latent",
     f"{C1S16}+kd+2stage", "lmbda=1", "docs/imagenette.md"),
    ("Imagenette, 10 classes, 128 px", "light client c1s16 (8×8 latent), 16 + 4 epochs", "imagenette_steps",
     f"{C1S16}+kd+2stage", "lmbda=1", "docs/imagenette.md"),
    ("Imagenette, 10 classes, 128 px", "split codec after `layer4` (heavy client)", "imagenette",
     "taskcodec-split-layer4-hyperprior+kd", "lmbda=0.1", "docs/imagenette.md"),
    ("Tiny ImageNet, 100 classes", "light client c1, 16 + 10 epochs", "light_steps_100cls", f"{C1}+kd+2stage", "lmbda=1",
     "docs/light-client.md"),
    ("Tiny ImageNet, 100 classes", "split codec after `layer4` (heavy client)", "split_100cls", "taskcodec-split-layer4-hyperprior+kd",
     "lmbda=3", "docs/strong-references.md"),
    ("Tiny ImageNet, classes 50-99 unseen by the client", "c1 from classes 0-49, frozen, `adapt --teacher`", "transfer_light_50cls",
     f"{C1}+kd+2stage+adapted-kd", "lmbda=1", "docs/generality.md"),
]  # fmt: skip

#: every folder under results/: what it shows and the page that reads it (results/README.md); a folder
#: missing here stops the script, so a new result is described once
FOLDERS: dict[str, tuple[str, str]] = {
    "baselines_10cls": ("the strong 10-class reference and JPEG/WebP/AVIF on the 500 test images", "strong-references"),
    "baselines_10cls_jpeg": ("the JPEG-augmented 10-class reference reading the same JPEG files", "strong-references"),
    "baselines_100cls": ("the strong 100-class reference and JPEG/WebP/AVIF on 5,000 test images", "strong-references"),
    "client_speed_imagenette": ("encode and decode speed of the Imagenette light clients at 128 px against Pillow JPEG",
                                "imagenette"),
    "client_speed_10cls": ("encode and decode speed of the light clients against Pillow JPEG, one thread", "light-client"),
    "default_imagenette": ("the default `python train.py data=imagenette` (teacher, then c1), each stage's record and its wall time",
                           "imagenette"),
    "default_10cls": ("the default `python train.py` (teacher, then the light client c1), each stage's record", "light-client"),
    "deploy": ("the ONNX client against the PyTorch one, and the HTTP server under load", "deployment"),
    "earlier": ("archive: every study measured against the 15-epoch references (its own README)", "earlier"),
    "fuzz": ("10,000 mutated records and containers through the decoder", "deployment"),
    "imagenette": ("Imagenette at 128 px: c1 at three λ, the split codec, JPEG/WebP/AVIF, the fine-tuned JPEG peer, "
                   "downsampling and the label row, 3,925 images", "imagenette"),
    "imagenette_baselines": ("the Imagenette reference, JPEG/WebP/AVIF and downsampling on its 3,925 val images", "imagenette"),
    "imagenette_latent": ("c1 with a fourth stride (an 8×8 latent at 128 px) on Imagenette: its rows, its speed, paired with c1",
                          "imagenette"),
    "imagenette_steps": ("c1s16 with a stage 1 twice as long on Imagenette, paired with c1s16; both runs' curves", "imagenette"),
    "imagenette_light_curves": ("hold-out and train top-1 per epoch of the Imagenette light clients' two stages", "imagenette"),
    "imagenette_reference": ("the Imagenette reference's learning curve and config", "imagenette"),
    "joint_10cls": ("the split codec's joint run, the default before the light client", "earlier"),
    "light_100cls": ("the light client c1 (5 + 3 epochs) and the split codecs on 100 classes", "light-client"),
    "light_10cls": ("the light clients of the 20 + 10 epoch budget, the split codec, JPEG, the label row", "light-client"),
    "light_10cls_longer": ("c8's server trained 30 epochs with TrivialAugment", "light-client"),
    "light_augment_10cls": ("c1 on TrivialAugment views, paired with c1", "light-client"),
    "light_client_100cls": ("c8 (7.7% of the MACs) on 100 classes, paired with c1", "light-client"),
    "light_curves_10cls": ("hold-out and train top-1 per epoch of the light clients' stages", "light-client"),
    "light_data_10cls": ("c1 with the other 90 classes' images for 3.3x the steps, paired with c1", "light-client"),
    "light_latent_10cls": ("c1 with a 16x16 latent, paired with c1", "light-client"),
    "light_paired_10cls": ("c1 with the other 90 classes' images at equal steps, paired with c1", "light-client"),
    "light_steps_100cls": ("c1 for 3.3x the steps on 100 classes, paired with c1", "light-client"),
    "light_steps_10cls": ("c1 for 3.3x the steps (parity), paired with c1 and with the extra-data run", "light-client"),
    "light_width_10cls": ("c1 with a 3x wider server decoder, paired with c1", "light-client"),
    "precision_step": ("one training step in fp32 against bf16 autocast on these CPUs", "strong-references"),
    "references": ("the strong references' learning curves and configs", "strong-references"),
    "source_jpeg_100cls": ("the quality the dataset's own JPEG files were saved at", "strong-references"),
    "split_100cls": ("the split codec's λ sweep on 100 classes, the fine-tuned JPEG peer, the label row", "strong-references"),
    "split_100cls_long": ("the split codec's 3-epoch run on 100 classes", "strong-references"),
    "train_test_grid_100cls": ("the 100-class reference fine-tuned on JPEG at each quality (the fair peer)", "strong-references"),
    "train_test_grid_imagenette": ("the Imagenette reference fine-tuned on JPEG q=5/10/20 at 128 px (the fair peer)", "imagenette"),
    "train_test_grid_10cls": ("the 10-class reference fine-tuned on JPEG at each quality (the fair peer)", "strong-references"),
    "transfer_light_50cls": ("c1 trained on classes 0-49, frozen, served to 50-99 by an adapted server", "generality"),
    "unseen_10cls": ("the split codec's joint run, frozen, adapted to classes 90-99", "generality"),
    "unseen_default_10cls": ("the default `python train.py` client, frozen, adapted to classes 90-99", "generality"),
    "unseen_light_10cls": ("c1 from classes 0-9, frozen, adapted to classes 90-99", "generality"),
}


def _f(v: str | float | None) -> float | None:
    return None if v in (None, "", "nan") else float(v)


def rate_rows(folder: str, prefixes: list[str]) -> str:
    """Rows of ``FOLDER/rate_accuracy.csv`` whose codec starts with one of ``prefixes`` (all without any)."""
    lines = ["| codec | setting | bytes/image | est. bytes | p99 / max bytes | top-1 | paired diff vs ref (95% CI) "
             "| client MACs (share) | client encode vs JPEG |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    with open(ROOT / folder / "rate_accuracy.csv") as f:
        for r in csv.DictReader(f):
            if prefixes and not r["codec"].startswith(tuple(prefixes)):
                continue
            est = f"{_f(r['est_bytes_per_image']):.1f}" if _f(r["est_bytes_per_image"]) is not None else "–"
            diff = "–"
            if _f(r.get("diff_vs_ref")) is not None:
                diff = (f"{100 * float(r['diff_vs_ref']):+.1f} pt ({100 * float(r['diff_ci95_lo']):+.1f} to "
                        f"{100 * float(r['diff_ci95_hi']):+.1f})")  # fmt: skip
            tail = f"{float(r['bytes_p99']):.0f} / {float(r['bytes_max']):.0f}" if _f(r.get("bytes_p99")) is not None else "–"
            share = f"{100 * float(r['client_macs_share']):.1f}%" if _f(r.get("client_macs_share")) is not None else "–"
            speed = f"{float(r['client_encode_vs_jpeg']):.2f}x" if _f(r.get("client_encode_vs_jpeg")) is not None else "–"
            lines.append(f"| {r['codec']} | {r['setting']} | {float(r['bytes_per_image']):.1f} | {est} | {tail} | "
                         f"{float(r['top1']):.3f} | {diff} | {share} | {speed} |")  # fmt: skip
    return "\n".join(lines)


def headline_point(folder: str, codec: str, setting: str) -> dict:
    """The point of ``codec`` at ``setting`` in ``FOLDER/headline.json`` (its parity point, or one of its points)."""
    h = json.loads((ROOT / "results" / folder / "headline.json").read_text())[codec]
    if h.get("setting") == setting:
        return h
    for p in h.get("points", []):
        if p["setting"] == setting:
            return {**p, "reaches_parity": False}
    raise KeyError(f"results/{folder}/headline.json has no {codec} at {setting}")


def jpeg_parity_bytes(folder: str) -> float | None:
    """JPEG's own parity point in ``FOLDER``'s table (its cheapest file within 1 point), from the committed rows."""
    rows = json.loads((ROOT / "results" / folder / "rate_accuracy.json").read_text())
    ref = next(r for r in rows if r["codec"] == "none")
    jpeg = standard_parity(rows, ref, margin=0.01).get("jpeg")
    return jpeg["bytes"] if jpeg else None


def summary() -> str:
    lines = ["| dataset | setting | bytes/image | × fewer than JPEG (same top-1) | × fewer than JPEG at parity | client MACs | "
             "client encode vs JPEG | Δtop-1 vs reference (95% CI) | parity |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for dataset, name, folder, codec, setting, page in SUMMARY:
        p = headline_point(folder, codec, setting)
        x = f"{p['x_fewer_than_jpeg']:.1f}×" if p.get("x_fewer_than_jpeg") else "–"
        at_parity = jpeg_parity_bytes(folder) if p["reaches_parity"] else None
        x_parity = f"{at_parity / p['bytes_per_image']:.1f}×" if at_parity else "–"
        speed = f"{p['client_encode_vs_jpeg']:.2f}×" if p.get("client_encode_vs_jpeg") else "–"
        diff = f"{100 * p['diff_vs_ref']:+.1f} pt ({100 * p['diff_ci95_lo']:+.1f} to {100 * p['diff_ci95_hi']:+.1f})"
        lines.append(f"| {dataset} | [{name}]({page}) | {p['bytes_per_image']:.1f} | {x} | {x_parity} | {100 * p['client_macs_share']:.1f}% "
                     f"| {speed} | {diff} | {'yes' if p['reaches_parity'] else 'no'} |")  # fmt: skip
    return "\n".join(lines)


def run_summary(folder: str) -> str:
    """What a ``train.py`` run printed at its end (``result.json`` → ``summary``)."""
    result = json.loads((ROOT / folder / "result.json").read_text())
    return "```\n" + "\n".join(result["summary"]) + "\n```"


def serve_load(path: str) -> str:
    """bench/serve_load.py's run: each server at 1, 8 and 64 clients and in the burst, and the issue's verdicts."""
    d = json.loads((ROOT / path).read_text())
    lines = [f"`{d['command']}` (git {d['git_revision'][:10]}); {d.get('model', '')}; settings {d['settings']}; "
             f"note: {d.get('note') or 'none'}.", "",
             "| server | clients | Retry-After | requests | admitted | 503 | dropped | admitted/s (steady) | p50 ms (queue + compute) | "
             "p99 ms (queue + compute) | connect p99 ms (opened) | RSS MB (peak) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, server in d["servers"].items():
        for r in server["runs"]:
            retry = "waited" if r.get("clients_honour_retry_after") else "ignored"
            # latency counts from the request's write; runs before that change counted the connect in it
            connect = f"{r['connect_p99_ms']:.1f} ({r['connections_opened']})" if "connect_p99_ms" in r else "in p99"
            lines.append(f"| {name} | {r['clients']} | {retry} | {r['requests']} | {r['admitted']} | {r['rejected_503']} | "
                         f"{r['dropped']} | {r['admitted_per_s']:.1f} ({r.get('steady_admitted_per_s') or float('nan'):.1f}) | {r['p50_ms']:.1f} ({r['queue_p50_ms']:.1f} + "
                         f"{r['compute_p50_ms']:.1f}) | {r['p99_ms']:.1f} ({r['queue_p99_ms']:.1f} + {r['compute_p99_ms']:.1f}) | "
                         f"{connect} | {r['rss_mb']:.0f} ({r['peak_rss_mb']:.0f}) |")  # fmt: skip
    lines += ["", "| server | clients | 64 clients: throughput / best, p99 / 8-client p99 | burst: throughput / best, p99 / 8-client p99 | holds |",
              "|---|---|---|---|---|"]  # fmt: skip
    for name, server in d["servers"].items():
        v = server["verdict"]
        for suffix, who in (("", "wait Retry-After"), ("_ignoring_retry_after", "ignore Retry-After")):
            if f"64_clients{suffix}" not in v:
                continue
            c64, burst = v[f"64_clients{suffix}"], v[f"burst{suffix}"]
            lines.append(f"| {name} | {who} | {c64['throughput_vs_best']:.2f}, {c64['p99_vs_8_clients']:.2f} | "
                         f"{burst['throughput_vs_best']:.2f}, {burst['p99_vs_8_clients']:.2f} | "
                         f"{'yes' if c64['holds'] and burst['holds'] else 'no'} |")  # fmt: skip
    for name, server in d["servers"].items():
        h = server.get("hostile_32_clients")
        if h:
            lines.append(f"\n{name}, {h['clients']} clients with {h['hostile_bodies']} hostile bodies among {h['requests']}: "
                         f"{h['status_4xx']} answered 4xx, {h['admitted']} 200, {h['rejected_503']} 503, {h['dropped']} dropped, "
                         f"{h['unexpected_answers']} answered other than expected, {h['wrong_labels']} wrong labels.")  # fmt: skip
    agree = d.get("agreement") or {}
    if agree:
        lines.append(f"\nONNX server against the PyTorch decoder: labels agree on {agree['label_agreement']:.4f} of "
                     f"{agree['images']} val images. Requests lost, answered wrong or unexpectedly: {d['lost_wrong_or_unexpected']}.")  # fmt: skip
    return "\n".join(lines)


def render(spec: str) -> str:
    kind, *args = spec.split()
    if kind == "summary":
        return summary()
    if kind == "rates":
        return rate_rows(args[0], args[1:])
    if kind == "include":
        return (ROOT / args[0]).read_text().strip()
    if kind == "run":
        return run_summary(args[0])
    if kind == "serve-load":
        return serve_load(args[0])
    raise ValueError(f"unknown generated block {spec!r}")


def regenerate(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("spec")) + "\n" + m.group(4), text)


def stages_by_folder() -> dict[str, list[str]]:
    """results folder -> the dvc stages whose outputs lie in it."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        out: dict[str, list[str]] = {}
        for s in repo.index.stages:
            for o in s.outs:
                parts = Path(str(o.def_path)).parts
                if parts[0] == "results" and len(parts) > 1:
                    out.setdefault(parts[1], []).append(s.addressing)
    return {k: sorted(set(v)) for k, v in out.items()}


def results_index() -> str:
    folders = sorted(p.name for p in (ROOT / "results").iterdir() if p.is_dir())
    missing = [f for f in folders if f not in FOLDERS]
    if missing:
        raise SystemExit(f"describe these results folders in bench/results_docs.py FOLDERS: {missing}")
    stages = stages_by_folder()
    lines = [
        "# results/",
        "",
        "Small committed outputs of real runs. Each folder holds `provenance.json` (or a `command` field): the exact",
        "command, the git revision and the resolved config. `dvc repro STAGE` regenerates a folder, training what it",
        "needs first; [docs/pipeline.md](../docs/pipeline.md) says how. Written by `python bench/results_docs.py`.",
        "",
        "| folder | what it shows | made by | page |",
        "|---|---|---|---|",
    ]
    for f in folders:
        what, page = FOLDERS[f]
        made = ", ".join(f"`dvc repro {s}`" for s in stages.get(f, [])) or "archive: see its README"
        lines.append(f"| [{f}/]({f}/) | {what} | {made} | [{page}](../docs/{page}.md) |")
    return "\n".join(lines) + "\n"


def documents() -> dict[Path, str]:
    """Every file this script writes -> its content generated from results/."""
    out = {p: regenerate(p.read_text()) for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
    out[ROOT / "results" / "README.md"] = results_index()
    return out


def main(argv: list[str] | None = None) -> int:
    global ROOT
    ap = bench_parser(__doc__, out=str(ROOT), threads=None, data=False)  # --out: the checkout whose documents it writes
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if any file is out of step")
    args = ap.parse_args(argv)
    ROOT = Path(args.out).resolve()
    stale = []
    for path, text in documents().items():
        if not path.exists() or path.read_text() != text:
            stale.append(str(path.relative_to(ROOT)))
            if not args.check:
                path.write_text(text)
    if args.check and stale:
        print(f"out of step with results/: {', '.join(stale)}; run python bench/results_docs.py", file=sys.stderr)
        return 1
    print(("stale: " if args.check else "wrote: ") + (", ".join(stale) or "nothing"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
