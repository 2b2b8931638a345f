"""The class-transfer summary (the transfer_50cls and transfer_light_50cls stages of dvc.yaml): frozen
client against trained client.

Reads the rate-accuracy table that evaluate.py wrote for classes 50-99 (reference B, JPEG, WebP,
a codec trained on B (split or light), and A's frozen client with an adapted server or a linear probe),
the adapt.json of each adaptation and the raw fine-tuning run, and writes transfer.json and
transfer.md next to the table. All top-1 differences are paired on the same 2,500 images.

    python bench/transfer_table.py --logs logs/transfer --out results/transfer_50cls
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from taskcodec.curves import paired_difference  # noqa: E402
from taskcodec.evaluation import read_per_image  # noqa: E402
from taskcodec.provenance import bench_parser, run_provenance, start_bench, write_json  # noqa: E402

KINDS = {"+adapted-linear": "frozen client, linear probe", "+adapted-kd": "frozen client, adapted server (KD)",
         "+adapted": "frozen client, adapted server", "": "client trained on B"}  # fmt: skip


def kind_of(codec: str) -> str:
    return next(k for k in KINDS if codec.endswith(k) or k == "")


def trained_counterpart(codec: str, setting: str, trained: list[dict]) -> dict | None:
    """The row of the client trained on B that a frozen client's row is compared with.

    The same codec (its label without the ``+adapted`` suffix) at the same setting; by setting alone
    when only one trained codec has that setting; otherwise none.
    """
    kind = kind_of(codec)
    base = codec.removesuffix(kind) if kind else codec
    same = [r for r in trained if r["setting"] == setting]
    return next((r for r in same if r["codec"] == base), same[0] if len(same) == 1 else None)


def main() -> None:
    p = bench_parser(__doc__, out="results/transfer_50cls", threads=None, data=False)
    p.add_argument("--logs", default="logs/transfer")
    args = p.parse_args()
    start_bench(args)
    table, logs = Path(args.out), Path(args.logs)
    rows = json.loads((table / "rate_accuracy.json").read_text())
    per_image = read_per_image(table)
    head = json.loads((table / "headline.json").read_text())
    ref = next(r for r in rows if r["codec"] == "none")
    jpeg = sorted((r for r in rows if r["codec"] == "jpeg"), key=lambda r: r["bytes_per_image"])
    jpeg_parity = next((r for r in jpeg if r["diff_vs_ref"] >= -0.01), None)

    points = []
    for r in rows:
        if not r["codec"].startswith("taskcodec"):
            continue
        points.append({"kind": KINDS[kind_of(r["codec"])], "codec": r["codec"], **{k: r[k] for k in (
            "setting", "bytes_per_image", "est_bytes_per_image", "top1", "diff_vs_ref", "diff_ci95_lo", "diff_ci95_hi", "bytes_p99", "bytes_max")}})  # fmt: skip
    # the cost of freezing, paired: frozen-client rows against the trained-client row at the same λ
    trained = [r for r in rows if r["codec"].startswith("taskcodec") and kind_of(r["codec"]) == ""]
    for pt in points:
        other = trained_counterpart(pt["codec"], pt["setting"], trained)
        if pt["kind"] != KINDS[""] and other is not None:
            mine = per_image[f"{pt['codec']}|{pt['setting']}"]
            theirs = per_image[f"{other['codec']}|{other['setting']}"]
            d = paired_difference(mine, theirs)
            pt |= {"diff_vs_trained_client": d["diff"], "diff_vs_trained_client_ci95": d["bootstrap_ci95"],
                   "bytes_vs_trained_client": pt["bytes_per_image"] / other["bytes_per_image"]}  # fmt: skip

    parity = {name: {k: v.get(k) for k in ("reaches_parity", "setting", "bytes_per_image", "top1", "diff_vs_ref",
                                           "diff_ci95_lo", "diff_ci95_hi", "x_fewer_than_jpeg")}
              for name, v in head.items() if name.startswith("taskcodec")}  # fmt: skip

    adoption = []
    for folder in sorted(logs.glob("adapted*/lmbda_*")):
        a = json.loads((folder / "adapt.json").read_text())
        adoption.append({"run": str(folder), "server": a["server"], "record_bytes_per_image": a["record_bytes_per_image"],
                         "holdout_top1": a["holdout_top1"], "pack_seconds": a["pack_seconds"],
                         "train_seconds": a["train_seconds"], "epochs": a["epochs"], "images": a["images"],
                         "best_epoch": a.get("best_epoch"), "teacher": a.get("teacher"), "distill": a.get("distill")})  # fmt: skip
    finetune = None
    ft = logs / "finetune_raw" / "result.json"  # train.py's result of the finished run
    if ft.is_file():
        run = json.loads(ft.read_text())
        finetune = {"test_top1": run.get("test/acc"), "wall_seconds": run.get("wall_seconds"),
                    "note": "reference A fine-tuned on B's raw train pixels, new class layer, 2 epochs (train.py, incl. data decoding and test)"}  # fmt: skip

    result = {"reference_b_top1": ref["top1"], "images": ref["n"],
              "jpeg_parity": None if jpeg_parity is None else {k: jpeg_parity[k] for k in ("setting", "bytes_per_image", "top1", "diff_vs_ref")},
              "points": points, "parity": parity, "adoption": adoption, "raw_finetune": finetune,
              **run_provenance()}  # fmt: skip
    write_json(table / "transfer.json", result)

    lines = [f"`{result['command']}` at {result['git_revision']}" + (" (uncommitted edits)" if result["git_dirty"] else ""), "",
             f"Classes 50-99, {ref['n']} official-val images; reference B (raw pixels) top-1 {ref['top1']:.3f}.",
             f"JPEG parity (paired diff >= -1 pt): {jpeg_parity['setting']} at {jpeg_parity['bytes_per_image']:.0f} B." if jpeg_parity else "JPEG never reaches parity.",
             "", "| client | server | λ | bytes/img | top-1 | Δ vs ref B (95% CI) | Δ vs trained client (95% CI) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for pt in sorted(points, key=lambda q: (q["setting"], q["kind"])):
        client = "trained on B" if pt["kind"] == KINDS[""] else "A's, frozen"
        server = pt["kind"].split(", ")[-1] if pt["kind"] != KINDS[""] else "trained with it"
        vs = (f"{100 * pt['diff_vs_trained_client']:+.1f} ({100 * pt['diff_vs_trained_client_ci95'][0]:+.1f}..{100 * pt['diff_vs_trained_client_ci95'][1]:+.1f})"
              if "diff_vs_trained_client" in pt else "")  # fmt: skip
        lines.append(f"| {client} | {server} | {pt['setting'].split('=')[1]} | {pt['bytes_per_image']:.1f} | {pt['top1']:.3f} | "
                     f"{100 * pt['diff_vs_ref']:+.1f} ({100 * pt['diff_ci95_lo']:+.1f}..{100 * pt['diff_ci95_hi']:+.1f}) | {vs} |")  # fmt: skip
    lines += ["", "Bytes at parity (cheapest setting with paired diff >= -1 pt):", ""]
    for name, v in parity.items():
        lines.append(f"- {name}: " + (f"{v['bytes_per_image']:.1f} B at {v['setting']} ({v['x_fewer_than_jpeg']:.1f}x fewer than JPEG)"
                                      if v["reaches_parity"] else "no measured setting reaches parity"))  # fmt: skip
    (table / "transfer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
