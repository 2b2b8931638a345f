"""``taskcodec`` command line. Plain PyTorch: it never imports Lightning, Hydra or the datamodules.

    taskcodec compress IMAGES|DIRS -m ENCODER -o OUT [--archive]   images -> .tc files (or one archive)
    taskcodec classify FILES -m DECODER [--topk K] [--format F]    .tc/.tca files -> labels
    taskcodec decompress FILE -m DECODER -o x.png                  what the classifier sees (pixel codecs)
    taskcodec info FILE                                            a container, pack, shard or export
    taskcodec pack DATASET -m ENCODER -o DIR                       dataset -> WebDataset shards (resumable)
    taskcodec export CKPT [--out DIR]                              encoder/decoder files from a checkpoint

Exit codes: 0 success; 2 an error in the input, files or arguments (one line on stderr, no
traceback); 1 an unexpected internal error (a bug: set TASKCODEC_DEBUG=1 for the traceback);
130 interrupted. See docs/cli.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from taskcodec.errors import TaskcodecError

EXIT_OK, EXIT_INTERNAL, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


def _bar(args: argparse.Namespace, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=True if args.quiet else None, file=sys.stderr)


def _export(args: argparse.Namespace) -> None:
    from taskcodec.export import export_checkpoint

    out = Path(args.out) if args.out else Path(args.ckpt).resolve().parent.parent / "export"
    enc, dec = export_checkpoint(args.ckpt, out)
    print(f"encoder: {enc}\ndecoder: {dec}")


def _compress(args: argparse.Namespace) -> None:
    from taskcodec.batching import encode_sources, set_threads
    from taskcodec.container import ContainerWriter, Entry, write_container, write_file_atomic
    from taskcodec.errors import DataError
    from taskcodec.export import load_encoder
    from taskcodec.io import find_images

    threads = set_threads(args.threads)
    items = find_images(args.inputs)
    names = [name for _, name in items]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"two inputs map to the same output name {dup!r}; compress them in separate runs")
    codec, meta = load_encoder(args.model)
    out = Path(args.out)
    total = 0
    with _bar(args, len(items), "compress") as bar:
        records = encode_sources(
            codec, len(items), lambda i: (items[i][0], str(items[i][0])), args.batch_size, threads,
            args.max_pixels, bar.update,
        )  # fmt: skip
        if args.archive:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".part")
            with open(tmp, "wb") as f:
                writer = ContainerWriter(f, meta["codec_id"])
                for i, record in records:
                    writer.add(record, name=None if args.no_names else names[i])
                writer.close()
            os.replace(tmp, out)
            total = out.stat().st_size
        else:
            for i, record in records:
                path = out / (names[i] + ".tc")
                path.parent.mkdir(parents=True, exist_ok=True)
                data = write_container([Entry(record)], meta["codec_id"])
                write_file_atomic(path, data)
                total += len(data)
    print(f"{len(items)} images -> {out}: {total} bytes ({total / len(items):.1f} bytes/image), model {meta['codec_id']}")


def _containers(paths: list[str]) -> list[Path]:
    from taskcodec.errors import DataError

    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(q for q in p.rglob("*") if q.suffix in (".tc", ".tca") and q.is_file()) if p.is_dir() else [p]
    if not files:
        raise DataError(f"no .tc/.tca files in {', '.join(paths)}")
    return files


def _classify(args: argparse.Namespace) -> None:
    from taskcodec.batching import decode_records, set_threads
    from taskcodec.container import read_container_file
    from taskcodec.export import load_decoder
    from taskcodec.report import label_rows, write_rows

    set_threads(args.threads)
    codec, meta = load_decoder(args.model)
    rows, records = [], []
    for path in _containers(args.files):
        container = read_container_file(path)
        container.check_codec(meta["codec_id"], str(path))
        for k, entry in enumerate(container.entries):
            rows.append({"file": str(path), "index": k, "name": entry.name, "label": entry.label})
            records.append(entry.record)
    with _bar(args, len(records), "classify") as bar:
        logits = []
        for start in range(0, len(records), args.batch_size):
            logits.append(decode_records(codec, records[start : start + args.batch_size], args.batch_size,
                                         max_pixels=args.max_pixels))
            bar.update(len(logits[-1]))
    import torch

    write_rows(label_rows(rows, torch.cat(logits), meta, args.topk), args.format, sys.stdout)


def _decompress(args: argparse.Namespace) -> None:
    from taskcodec.container import read_container_file
    from taskcodec.errors import ConfigError
    from taskcodec.export import load_decoder
    from taskcodec.io import save_png

    codec, meta = load_decoder(args.model)
    if not codec.has_pixels:
        raise ConfigError(
            f"model {meta['codec_id']} ({meta['family']}, {codec.config.get('head', 'latent')} head) decodes to a "
            "latent for the classifier, not to pixels: there is no image to show; use `taskcodec classify`"
        )
    container = read_container_file(args.file)
    container.check_codec(meta["codec_id"], args.file)
    if not 0 <= args.index < len(container.entries):
        raise ConfigError(f"--index {args.index} is outside 0..{len(container.entries) - 1} for {args.file}")
    from taskcodec.batching import decode_records

    x_hat = decode_records(codec, [container.entries[args.index].record], key="x_hat", max_pixels=args.max_pixels)[0]
    save_png(x_hat, args.out)
    print(f"{args.file}[{args.index}] -> {args.out} ({x_hat.shape[2]}x{x_hat.shape[1]})")


def _info(args: argparse.Namespace) -> None:
    from taskcodec.report import describe

    print(describe(args.file))


def _pack(args: argparse.Namespace) -> None:
    from taskcodec.batching import set_threads
    from taskcodec.export import load_encoder
    from taskcodec.pack import open_source, pack

    threads = set_threads(args.threads)
    images = open_source(args.dataset, args.kind, args.split, args.num_classes)
    codec, meta = load_encoder(args.model)
    with _bar(args, len(images), "pack") as bar:
        plan = pack(codec, meta, images, args.out, str(args.dataset), args.split, args.shard_size,
                    args.batch_size, threads, bar.update, names=not args.no_names)  # fmt: skip
    print(f"{plan['count']} images in {plan['num_shards']} shards -> {args.out}, model {plan['codec_id']}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every command has ``--help``)."""
    from taskcodec.io import DEFAULT_MAX_PIXELS

    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="taskcodec", description=__doc__, formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=func)
        return p

    p = command("compress", _compress, "compress images (any format Pillow reads) to .tc files or one archive")
    p.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("-m", "--model", required=True, help="encoder-<id>.pt from `taskcodec export`")
    p.add_argument("-o", "--out", required=True, help="output folder (one .tc per image), or the archive file")
    p.add_argument("--archive", action="store_true", help="write one archive file with every image")
    p.add_argument("--no-names", action="store_true", help="archive: do not store the image names")
    p = command("classify", _classify, "classify .tc/.tca files (or folders of them) with a decoder")
    p.add_argument("files", nargs="+", help="container files or folders")
    p.add_argument("-m", "--model", required=True, help="decoder-<id>.pt from `taskcodec export`")
    p.add_argument("--topk", type=int, default=1, help="how many classes to list per image (default 1)")
    p.add_argument("--format", choices=("text", "json", "csv"), default="text", help="output format")
    p = command("decompress", _decompress, "write what the classifier sees as a PNG (pixel codecs only)")
    p.add_argument("file", help="a .tc file (or an archive with --index)")
    p.add_argument("-m", "--model", required=True, help="decoder-<id>.pt from `taskcodec export`")
    p.add_argument("-o", "--out", required=True, help="the PNG to write")
    p.add_argument("--index", type=int, default=0, help="which record of an archive (default 0)")
    p = command("info", _info, "describe a container, a pack folder or shard, or an exported model file")
    p.add_argument("file")
    p = command("pack", _pack, "compress a labelled dataset into WebDataset shards; re-run to resume")
    p.add_argument("dataset", help="Tiny ImageNet zip/folder, or a class-per-folder tree")
    p.add_argument("-m", "--model", required=True, help="encoder-<id>.pt from `taskcodec export`")
    p.add_argument("-o", "--out", required=True, help="output folder (shards + manifest.json)")
    p.add_argument("--kind", choices=("auto", "tiny-imagenet", "image-folder"), default="auto")
    p.add_argument("--split", choices=("train", "val"), default="train", help="Tiny ImageNet split")
    p.add_argument("--num-classes", type=int, default=None, help="Tiny ImageNet: the first K classes")
    p.add_argument("--shard-size", type=int, default=1000, help="images per shard (default 1000)")
    p.add_argument("--no-names", action="store_true", help="store labels and records only (names are most of a pack's bytes)")
    p = command("export", _export, "write encoder/decoder files from a joint-codec checkpoint")
    p.add_argument("ckpt", help="Lightning checkpoint written by train.py (model=joint)")
    p.add_argument("--out", help="output folder (default: <run dir>/export)")
    for name in ("compress", "classify", "decompress"):
        sub.choices[name].add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                                       help=f"refuse larger images (default {DEFAULT_MAX_PIXELS} = 4096x4096)")
    for name in ("compress", "classify", "pack"):
        p = sub.choices[name]
        p.add_argument("--batch-size", type=int, default=32, help="images per network call (default 32)")
        p.add_argument("--threads", type=int, default=None, help="torch/decoder threads (default: all cores)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (see the module docstring)."""
    args = build_parser().parse_args(argv)
    if not os.environ.get("TASKCODEC_DEBUG"):  # library deprecation notices are not the user's business
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch = sys.modules.get("torch")  # called in-process (tests, notebooks): leave its thread count as found
    threads = torch.get_num_threads() if torch is not None else None
    try:
        args.func(args)
    except TaskcodecError as e:
        print(f"taskcodec: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:  # disk full, permissions, output path is a folder, ...
        print(f"taskcodec: error: {e.strerror or e}: {e.filename or ''}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("taskcodec: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if os.environ.get("TASKCODEC_DEBUG"):
            raise
        print(f"taskcodec: internal error: {type(e).__name__}: {e} (a bug; TASKCODEC_DEBUG=1 shows the traceback)",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERNAL
    finally:
        if threads is not None:
            torch.set_num_threads(threads)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
