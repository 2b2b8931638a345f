"""Packed latents vs in-memory latents: sizes on disk, identity, and a server trained from each.

    OMP_NUM_THREADS=1 python bench/packed_10cls.py [--encoder E.pt --decoder D.pt --epochs 5]

1. ``taskcodec pack`` (the CLI, as a user runs it) the train and val splits of the first 10
   classes of tiny-imagenet-100 with an exported split codec (skipped when already complete).
2. Sizes: the pack folders (shards + manifest) against the original JPEG files of the same images
   (the zip's member sizes, and their JPEG payload alone), and the records alone.
3. The same latents computed in memory from the decoded images with the encoder; are they equal?
4. The server side (``lightning_modules.server.ServerModule``, re-initialised) trained with the same
   seed, epochs and batch size (a) from the packs and (b) from the in-memory latents; top-1 of both
   on the official val split (500 images), and the exported decoder's own top-1 for reference.

Writes ``results/packed_10cls/result.json`` and ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TASKCODEC_ROOT", str(ROOT))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from datamodules.packed import PackedLatentDataModule  # noqa: E402
from datamodules.tiny_imagenet import TinyImageNetDataModule  # noqa: E402
from lightning_modules.server import ServerModule  # noqa: E402
from taskcodec.baselines import jpeg_payload_bytes  # noqa: E402
from taskcodec.bitstream import unpack_record  # noqa: E402
from taskcodec.datasets import tiny_imagenet_split  # noqa: E402
from taskcodec.export import load_decoder, load_encoder  # noqa: E402
from taskcodec.pack import read_manifest, read_shard, shard_paths  # noqa: E402
from taskcodec.provenance import bench_parser, run_provenance, start_bench, write_json  # noqa: E402

EXPORT = ROOT / "logs" / "split_sweep" / "10cls" / "layer4" / "3" / "export"


def one(pattern: str) -> str:
    found = sorted(EXPORT.glob(pattern))
    return str(found[0]) if len(found) == 1 else ""


def pack_split(args: argparse.Namespace, split: str, codec_id: str) -> tuple[Path, dict]:
    """Run ``taskcodec pack`` unless the folder already holds a complete pack of this model."""
    folder = Path(args.packs) / split
    command = [sys.executable, "-m", "taskcodec.cli", "pack", args.data, "-m", args.encoder, "-o", str(folder),
               "--split", split, "--num-classes", str(args.num_classes), "--threads", "1", "-q"]  # fmt: skip
    try:
        plan = read_manifest(folder)
        done = plan.get("complete") and plan["codec_id"] == codec_id and bool(shard_paths(folder))
    except Exception:  # noqa: BLE001  (no folder yet, or an unfinished one: pack resumes it)
        done = False
    seconds = None
    if not done:
        start = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        seconds = time.perf_counter() - start
    cmd = " ".join(["taskcodec", *(os.path.relpath(a, ROOT) if Path(a).is_absolute() else a for a in command[3:])])
    return folder, {"command": cmd, "pack_seconds": seconds, "skipped_complete_pack": done}


def sizes(folder: Path, zip_path: str, split: str, num_classes: int) -> dict:
    """Pack folder bytes vs the original JPEGs of the same images (whole files and payload alone)."""
    files = [folder / "manifest.json", *shard_paths(folder)]
    folder_bytes = sum(p.stat().st_size for p in files)
    entries = [e for p in shard_paths(folder) for e in read_shard(p).entries]
    record_bytes = sum(len(e.record) for e in entries)
    payload_bytes = sum(len(unpack_record(e.record)[2]) for e in entries)
    name_bytes = sum(len(e.name.encode()) for e in entries if e.name)
    listing = tiny_imagenet_split(zip_path, split, num_classes)
    assert [e.name for e in entries] == listing.names, "pack order differs from the dataset listing"
    with zipfile.ZipFile(zip_path) as zf:
        prefix = next(m.group(1) or "" for n in zf.namelist() if (m := re.fullmatch(r"([^/]+/)?wnids\.txt", n)))
        jpeg_bytes = sum(zf.getinfo(prefix + name).file_size for name in listing.names)
        jpeg_payload = sum(jpeg_payload_bytes(zf.read(prefix + name)) for name in listing.names)
    n = len(entries)
    return {
        "images": n, "shards": len(files) - 1,
        "pack_folder_bytes": folder_bytes, "pack_bytes_per_image": folder_bytes / n,
        "record_bytes": record_bytes, "record_bytes_per_image": record_bytes / n,
        "payload_bytes_per_image": payload_bytes / n,
        "name_bytes_per_image": name_bytes / n,  # the stored image names, inside the container overhead
        "container_and_tar_overhead_bytes_per_image": (folder_bytes - record_bytes) / n,
        "jpeg_file_bytes": jpeg_bytes, "jpeg_bytes_per_image": jpeg_bytes / n,
        "jpeg_payload_bytes_per_image": jpeg_payload / n,
        "x_smaller_than_jpeg_files": jpeg_bytes / folder_bytes,
        "x_smaller_than_jpeg_payload": jpeg_payload / folder_bytes,
    }  # fmt: skip


@torch.no_grad()
def in_memory_latents(encoder, images, batch: int = 250) -> torch.Tensor:
    """``y_hat`` as the encoder's entropy stage rounds it in eval mode, from uint8 [N, H, W, 3]."""
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start : start + batch]).permute(0, 3, 1, 2).float().div_(255.0)
        out.append(encoder.entropy(encoder.analysis(encoder._pad(x)))[0])
    return torch.cat(out)


def compare(packed: torch.Tensor, memory: torch.Tensor) -> dict:
    differ = (packed != memory).flatten(1).any(1)
    return {"identical": bool(torch.equal(packed, memory)), "images_differing": int(differ.sum()),
            "symbols_differing": int((packed != memory).sum()), "max_abs_diff": float((packed - memory).abs().max())}  # fmt: skip


def train_server(args: argparse.Namespace, datamodule: pl.LightningDataModule) -> tuple[float, float]:
    """Same seed, epochs, batch size and schedule for both runs; returns (test top-1, seconds)."""
    pl.seed_everything(args.seed, workers=True)
    model = ServerModule(args.decoder, lr=args.lr, weight_decay=1e-4, reset="all")
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, deterministic=True, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0)  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    seconds = time.perf_counter() - start
    return float(trainer.test(model, datamodule=datamodule, verbose=False)[0]["test/acc"]), seconds


def main() -> None:
    p = bench_parser(__doc__, out=str(ROOT / "results" / "packed_10cls"))
    p.add_argument("--encoder", default=one("encoder-*.pt"), help=f"default: {EXPORT}/encoder-*.pt")
    p.add_argument("--decoder", default=one("decoder-*.pt"), help=f"default: {EXPORT}/decoder-*.pt")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--packs", default=str(ROOT / "logs" / "packs" / "packed_10cls"), help="scratch folder for the packs")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    if not (args.encoder and args.decoder):
        p.error(f"no single encoder-*.pt/decoder-*.pt pair in {EXPORT}; pass --encoder and --decoder")
    start_bench(args)
    encoder, meta = load_encoder(args.encoder)
    result: dict = run_provenance(
        machine=f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        encoder=os.path.relpath(args.encoder, ROOT), decoder=os.path.relpath(args.decoder, ROOT),
        codec_id=meta["codec_id"], codec={"family": meta["family"], **encoder.config},
        settings={"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                  "optimizer": "AdamW, weight decay 1e-4, 0.3-epoch warm-up then cosine", "reset": "all"},
    )  # fmt: skip
    folders = {}
    for split in ("train", "val"):
        folders[split], result[f"pack_{split}"] = pack_split(args, split, meta["codec_id"])
        result[f"pack_{split}"].update(sizes(folders[split], args.data, split, args.num_classes))

    packed = PackedLatentDataModule(str(folders["train"]), args.decoder, val=str(folders["val"]), batch_size=args.batch_size)
    packed.setup()
    dm = TinyImageNetDataModule(args.data, num_classes=args.num_classes, holdout_per_class=0, augment=False, num_workers=0)
    dm.setup("fit")
    dm.setup("test")
    memory = {}
    for split, images in (("train", dm.train_set), ("val", dm.test_set)):
        listing = tiny_imagenet_split(args.data, split, args.num_classes)
        assert images.names == listing.names and images.labels.tolist() == listing.labels, f"{split}: other images"
        y_hat = in_memory_latents(encoder, images.images)
        memory[split] = TensorDataset(y_hat, torch.from_numpy(images.labels))
        result[f"latents_{split}"] = compare(packed.sets[split].tensors[0], y_hat)
        assert torch.equal(packed.sets[split].tensors[1], memory[split].tensors[1]), f"{split}: labels differ"

    decoder, _ = load_decoder(args.decoder)
    with torch.no_grad():
        val_y, val_labels = packed.sets["val"].tensors
        logits = decoder.synthesis(val_y, packed.image_size or (64, 64))["logits"]
    result["exported_decoder_val_top1"] = float((logits.argmax(1) == val_labels).float().mean())

    in_memory = pl.LightningDataModule.from_datasets(train_dataset=memory["train"], test_dataset=memory["val"],
                                                     batch_size=args.batch_size, num_workers=0)  # fmt: skip
    acc_packed, t_packed = train_server(args, packed)
    acc_memory, t_memory = train_server(args, in_memory)
    result.update(
        val_top1_trained_from_packs=acc_packed, val_top1_trained_in_memory=acc_memory,
        top1_difference_points=100 * (acc_packed - acc_memory), within_1_point=abs(acc_packed - acc_memory) <= 0.01,
        train_seconds={"packs": t_packed, "in_memory": t_memory},
    )  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "result.json", result)
    (out / "README.md").write_text(readme(result))
    print(json.dumps({k: v for k, v in result.items() if "top1" in k or k.startswith("latents")}, indent=1))


def readme(r: dict) -> str:
    tr, va = r["pack_train"], r["pack_val"]
    rows = "\n".join(
        f"| {name} | {s['images']} | {s['pack_bytes_per_image']:.1f} | {s['record_bytes_per_image']:.1f} | "
        f"{s['name_bytes_per_image']:.1f} | {s['jpeg_bytes_per_image']:.0f} | {s['jpeg_payload_bytes_per_image']:.0f} | "
        f"{s['x_smaller_than_jpeg_files']:.1f}x | {s['x_smaller_than_jpeg_payload']:.1f}x |"
        for name, s in (("train", tr), ("val", va))
    )
    same = all(r[f"latents_{s}"]["identical"] for s in ("train", "val"))
    return f"""# Packed latents train the server as well as in-memory latents (10 classes)

Made by `{r['command']}` at git `{r['git_revision']}{'+dirty' if r['git_dirty'] else ''}`; full numbers in `result.json`.
Codec: `{r['encoder']}` (split family, {r['codec']['classifier']} cut after {r['codec']['split']},
M={r['codec']['M']}, model id {r['codec_id']}). Packs: `{tr['command']}` and the same with `--split val`.

Sizes (pack = the folder's tar shards + manifest, per image; record = one image's coded latent with
its size header; names = the image names the container stores beside each record, most of the
rest; JPEG = the original Tiny ImageNet files of the same images, whole and payload-only):

| split | images | pack B/image | record B/image | names B/image | JPEG B/image | JPEG payload B/image | JPEG / pack | JPEG payload / pack |
|---|---|---|---|---|---|---|---|---|
{rows}

Latents decoded from the packs {'are bit-identical to' if same else 'differ from'} the encoder's `y_hat`
computed in memory from the decoded images (images differing: train {r['latents_train']['images_differing']},
val {r['latents_val']['images_differing']}).

Server side (`lightning_modules/server.py`: g_s and the ResNet tail re-initialised, entropy stage
frozen) trained {r['settings']['epochs']} epochs, batch {r['settings']['batch_size']}, seed {r['settings']['seed']},
on all {tr['images']} train images, then tested on the {va['images']} official val images:

| trained from | val top-1 |
|---|---|
| packed latents (`PackedLatentDataModule`) | {r['val_top1_trained_from_packs']:.4f} |
| in-memory latents (encoder on decoded images) | {r['val_top1_trained_in_memory']:.4f} |
| difference | {r['top1_difference_points']:+.2f} points |
| exported decoder, not retrained (reference) | {r['exported_decoder_val_top1']:.4f} |

The exported decoder was trained jointly with the encoder; the retrained servers learn from the
latents alone. With identical latents, the same seed and deterministic CPU training, the two runs
are the same computation, so any difference would come from the data path.
"""


if __name__ == "__main__":
    main()
