"""``taskcodec`` command line. Plain PyTorch: only ``adapt`` (which trains) imports Lightning.

    taskcodec compress IMAGES|DIRS -m ENCODER -o OUT [--archive]   images -> .tc files (or one archive)
    taskcodec classify FILES -m DECODER [--topk K] [--format F]    .tc/.tca files -> labels
    taskcodec decompress FILE -m DECODER -o x.png                  what the classifier sees (pixel codecs)
    taskcodec info FILE                                            a container, pack, shard or export
    taskcodec pack DATASET -m ENCODER -o DIR                       dataset -> WebDataset shards (resumable)
    taskcodec export CKPT [--out DIR]                              encoder/decoder files from a checkpoint
    taskcodec adapt DATASET -m ENCODER -o DIR                      a new server (decoder) for your classes
    taskcodec analyze IMAGES -m ENCODER [--jpeg-quality Q] -o DIR  where the bits go: bit maps + JSON
    taskcodec serve -m SERVER [--port P]                           HTTP: POST a container, get JSON labels

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
    from taskcodec.export import ENCODER_KIND, export_checkpoint, read_export

    try:
        kind = read_export(args.ckpt)["kind"]
    except TaskcodecError:
        kind = None  # a training checkpoint
    if kind is not None and not args.onnx:
        side = "client" if kind == ENCODER_KIND else "server"
        raise TaskcodecError(f"{args.ckpt} is an export already; add --onnx to make a torch-free {side} of it")
    enc = dec = None
    if kind is None:
        out = Path(args.out) if args.out else Path(args.ckpt).resolve().parent.parent / "export"
        enc, dec = export_checkpoint(args.ckpt, out)
        print(f"encoder: {enc}\ndecoder: {dec}")
    else:
        out = Path(args.out) if args.out else Path(args.ckpt).parent
        enc, dec = (Path(args.ckpt), None) if kind == ENCODER_KIND else (None, Path(args.ckpt))
    if not args.onnx:
        return
    from taskcodec.export import load_decoder, load_encoder
    from taskcodec.onnx_export import export_onnx_client, export_onnx_server

    if enc is not None:
        codec, meta = load_encoder(enc)
        onnx_path, tables = export_onnx_client(codec, out, meta["codec_id"], meta)
        print(f"onnx client: {onnx_path} (+ {tables.name}); run it with `python -m taskcodec.client compress`")
    if dec is not None:
        codec, meta = load_decoder(dec)
        onnx_path, tables = export_onnx_server(codec, out, meta["codec_id"], meta)
        print(f"onnx server: {onnx_path} (+ {tables.name}); run it with `taskcodec serve -m {onnx_path.name}`")


def _compress(args: argparse.Namespace) -> None:
    from taskcodec.batching import encode_sources, set_threads
    from taskcodec.container import ContainerWriter, Entry, write_container, write_file_atomic
    from taskcodec.errors import DataError
    from taskcodec.export import load_encoder
    from taskcodec.io import find_images
    from taskcodec.preprocessing import crop_fraction, input_size

    threads = set_threads(args.threads)
    items = find_images(args.inputs)
    names = [name for _, name in items]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"two inputs map to the same output name {dup!r}; compress them in separate runs")
    codec, meta = load_encoder(args.model)
    size = None if args.native_size else input_size(meta)  # the export's preprocessing, by default
    out = Path(args.out)
    total = done = 0
    skipped = _Skipped()
    with _bar(args, len(items), "compress") as bar:
        records = encode_sources(
            codec, len(items), lambda i: (items[i][0], str(items[i][0])), args.batch_size, threads,
            args.max_pixels, bar.update, size, None if args.strict else lambda i, err: skipped.add(str(items[i][0]), err),
            crop_fraction(meta),
        )  # fmt: skip
        if args.archive:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".part")
            try:
                with open(tmp, "wb") as f:
                    writer = ContainerWriter(f, meta["codec_id"])
                    for i, record in records:
                        writer.add(record, name=None if args.no_names else names[i])
                        done += 1
                    writer.close()
                os.replace(tmp, out)
            finally:
                tmp.unlink(missing_ok=True)  # an error or interrupt leaves no half-written archive
            total = out.stat().st_size
        else:
            for i, record in records:
                path = out / (names[i] + ".tc")
                path.parent.mkdir(parents=True, exist_ok=True)
                data = write_container([Entry(record)], meta["codec_id"])
                write_file_atomic(path, data)
                total += len(data)
                done += 1
    print(f"{done} images -> {out}: {total} bytes ({total / max(1, done):.1f} bytes/image), model {meta['codec_id']}")
    skipped.finish(done, "compressed")


class _Skipped:
    """Inputs a batch command skipped: each reported on stderr as it happens, a summary at the end.

    Batch commands keep going past a bad input, like gzip and cp, and exit non-zero (2) when anything
    was skipped; ``--strict`` stops at the first one instead.
    """

    def __init__(self) -> None:
        self.count = 0

    def add(self, what: str, err: Exception) -> None:
        self.count += 1
        print(f"taskcodec: skipped {what}: {err}", file=sys.stderr)

    def finish(self, done: int, verb: str, recorded: list | None = None) -> None:
        """Raise the summary when anything was skipped; ``recorded``: the skips a resumable output
        keeps (a pack's manifest), which include earlier runs' and count instead of this run's."""
        count = self.count if recorded is None else len(recorded)
        if count:
            from taskcodec.errors import SkippedInputsError

            raise SkippedInputsError(
                f"{done} {verb}, {count} skipped (each reason above); fix or remove those inputs, "
                "or use --strict to stop at the first one"
            )


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
    skipped = _Skipped()
    files = _containers(args.files)
    rows, logits = [], []
    with _bar(args, len(files), "classify") as bar:
        for path in files:  # one file at a time: a bad file is skipped (or stops all with --strict)
            try:
                container = read_container_file(path)
                container.check_codec(meta["codec_id"], str(path))
                records = [e.record for e in container.entries]
                out = [decode_records(codec, records[s : s + args.batch_size], args.batch_size, max_pixels=args.max_pixels)
                       for s in range(0, len(records), args.batch_size)]  # fmt: skip
            except TaskcodecError as err:
                if args.strict:
                    raise
                skipped.add(str(path), err)
                continue
            finally:
                bar.update(1)
            rows += [{"file": str(path), "index": k, "name": e.name, "label": e.label} for k, e in enumerate(container.entries)]
            logits += out
    import torch

    if rows:
        write_rows(label_rows(rows, torch.cat(logits), meta, args.topk), args.format, sys.stdout)
    skipped.finish(len(files) - skipped.count, "files classified")


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


def _analyze(args: argparse.Namespace) -> None:
    from taskcodec.analysis.report import analyze_images

    with _bar(args, 0, "analyze") as bar:
        analyze_images(args.inputs, args.model, args.jpeg_quality or [], Path(args.out), args.grid, args.max_pixels, bar)


def _pack(args: argparse.Namespace) -> None:
    from taskcodec.batching import set_threads
    from taskcodec.export import load_encoder
    from taskcodec.pack import open_source, pack

    threads = set_threads(args.threads)
    images = open_source(args.dataset, args.kind, args.split, args.num_classes, args.first_class)
    codec, meta = load_encoder(args.model)
    skipped = _Skipped()
    with _bar(args, len(images), "pack") as bar:
        plan = pack(codec, meta, images, args.out, str(args.dataset), args.split, args.shard_size,
                    args.batch_size, threads, bar.update, names=not args.no_names,
                    on_error=None if args.strict else skipped.add)  # fmt: skip
    left_out = plan.get("skipped", [])
    print(f"{plan['count'] - len(left_out)} images in {plan['num_shards']} shards -> {args.out}, model {plan['codec_id']}")
    skipped.finish(plan["count"] - len(left_out), "packed", left_out)  # this run's and earlier runs' of the same pack


def _workflow(name: str):
    """A verb that trains, found through the ``taskcodec.workflows`` entry points (pyproject.toml).

    Training is Lightning's job and lives a layer above this package; the entry point lets the CLI run
    it without importing that layer, and only when the verb runs, so the other verbs stay Lightning-free.
    """
    from importlib.metadata import entry_points

    from taskcodec.errors import ConfigError

    found = [ep for ep in entry_points(group="taskcodec.workflows") if ep.name == name]
    if not found:
        raise ConfigError(f"`taskcodec {name}` is not installed: run `pip install -e .` in the repository "
                          "(it registers the training workflows as entry points)")  # fmt: skip
    try:
        return found[0].load()
    except ImportError as e:
        raise ConfigError(f"`taskcodec {name}` needs pytorch-lightning and the repository's packages: {e}") from e


def _adapt(args: argparse.Namespace) -> None:
    from taskcodec.batching import set_threads

    threads = set_threads(args.threads)
    adapt = _workflow("adapt")
    skipped = _Skipped()
    with _bar(args, None, "compress") as bar:
        opts = {k: getattr(args, k) for k in ("init_decoder", "server", "kind", "num_classes", "first_class",
                                              "holdout_per_class", "epochs", "lr", "batch_size", "seed", "teacher", "distill")}  # fmt: skip
        summary = adapt(args.model, args.dataset, args.out, **opts, threads=threads, progress=bar.update,
                        on_error=None if args.strict else skipped.add)  # fmt: skip
    held = summary["holdout_top1"]
    print(f"{summary['images']} images of {summary['num_classes']} classes, {summary['record_bytes_per_image']:.1f} bytes/image; "
          f"hold-out top-1 {'n/a' if held is None else f'{held:.3f}'}; decoder -> {summary['decoder']}")  # fmt: skip
    skipped.finish(summary["images"], "images trained on", summary.get("skipped", []))


def _serve(args: argparse.Namespace) -> None:
    from taskcodec.serve import serve

    print(f"serving {args.model} on http://{args.host}:{args.port} (POST /v1/classify, GET /health, GET /metrics, "
          "the page at /)", file=sys.stderr)  # fmt: skip
    serve(args.model, args.host, args.port, workers=args.workers, max_body=args.max_body, max_images=args.max_images,
          max_batch=args.max_batch, batch_timeout=args.batch_timeout_ms / 1000, threads=args.threads,
          max_queue=args.max_queue, max_wait=args.max_wait_ms / 1000 if args.max_wait_ms > 0 else None,
          client=args.client, results_table=args.results_table, loop_nice=args.loop_nice,
          max_connections=args.max_connections, backlog=args.backlog)  # fmt: skip


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
    p.add_argument("--native-size", action="store_true",
                   help="code images at their own size instead of the model's input (the export's preprocessing)")
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
    p.add_argument("--num-classes", type=int, default=None, help="Tiny ImageNet: K classes (default: all)")
    p.add_argument("--first-class", type=int, default=0, help="Tiny ImageNet: the first class index (default 0)")
    p.add_argument("--shard-size", type=int, default=1000, help="images per shard (default 1000)")
    p.add_argument("--no-names", action="store_true", help="store labels and records only (names are most of a pack's bytes)")
    p = command("adapt", _adapt, "train a server for your own classes on an exported client's bytes; "
                "writes a decoder for `classify` (the client and its bytes stay as they are)")
    p.add_argument("dataset", help="Tiny ImageNet zip/folder, or a class-per-folder tree of your images")
    p.add_argument("-m", "--model", required=True, help="encoder-<id>.pt of the deployed client")
    p.add_argument("-o", "--out", required=True, help="output folder: decoder-<id>.pt, a copy of the encoder, packs/, adapt.json")
    p.add_argument("--init-decoder", help="start the server from this decoder-<id>.pt (new class layer); default: from scratch")
    p.add_argument("--server", choices=("tail", "linear"), default=None,
                   help="the full server (g_s + classifier tail) or a linear probe on the pooled latent")
    p.add_argument("--kind", choices=("auto", "tiny-imagenet", "image-folder"), default="auto")
    p.add_argument("--num-classes", type=int, default=None, help="Tiny ImageNet: how many classes (default: all)")
    p.add_argument("--first-class", type=int, default=0, help="Tiny ImageNet: the first class index (default 0)")
    p.add_argument("--holdout-per-class", type=int, default=10, help="images per class held out to report top-1 (default 10)")
    p.add_argument("--teacher", help="a classifier of these classes (train.py's best.ckpt) the server also distils")
    p.add_argument("--distill", type=float, default=0.5, help="with --teacher: the KL share of the loss (default 0.5)")
    p.add_argument("--epochs", type=int, default=10, help="server training epochs; the best hold-out epoch is kept (default 10)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0)
    p = command("export", _export, "write encoder/decoder files from a joint-codec checkpoint (and a torch-free ONNX client)")
    p.add_argument("ckpt", help="Lightning checkpoint written by train.py (model=joint), or with --onnx an "
                               "encoder-<id>.pt or decoder-<id>.pt")
    p.add_argument("--out", help="output folder (default: <run dir>/export, or the encoder's folder)")
    p.add_argument("--onnx", action="store_true",
                   help="also write client-<id>.onnx + .npz for `python -m taskcodec.client` and server-<id>.onnx + .npz "
                        "for `taskcodec serve` (factorized entropy model)")
    p = command("analyze", _analyze, "where the bits go: per-pixel bit maps (learned codec and/or JPEG) as PNG + JSON")
    p.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("-m", "--model", help="encoder-<id>.pt from `taskcodec export` (any codec family)")
    p.add_argument("--jpeg-quality", type=int, action="append", help="also map JPEG at this quality (repeatable)")
    p.add_argument("-o", "--out", required=True, help="output folder: bits.json and bitmaps.png")
    p.add_argument("--grid", type=int, default=8, help="images drawn in bitmaps.png (default 8; 0: none)")
    p = command("serve", _serve, "serve a model over HTTP: POST a container to /v1/classify, get JSON labels")
    p.add_argument("-m", "--model", required=True,
                   help="server-<id>.onnx from `taskcodec export DECODER --onnx` (no torch), or decoder-<id>.pt")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-body", type=int, default=1 << 20, help="largest request body in bytes (default 1 MiB)")
    p.add_argument("--max-images", type=int, default=256, help="most images per request (default 256)")
    p.add_argument("--max-batch", type=int, default=32, help="most images per decoder call across requests (default 32)")
    p.add_argument("--batch-timeout-ms", type=float, default=2.0, help="how long a batch waits for more images (default 2)")
    p.add_argument("--max-queue", type=int, default=256,
                   help="most images admitted and waiting; more are answered 503 + Retry-After at once (default 256)")
    p.add_argument("--max-wait-ms", type=float, default=100.0,
                   help="a request waiting longer is answered 503, not computed (default 100; 0: no deadline)")
    p.add_argument("--max-connections", type=int, default=None,
                   help="open connections beyond which uvicorn answers 503 and closes the connection before "
                        "reading the request (default: 4 x --max-queue, at least 1024)")
    p.add_argument("--backlog", type=int, default=2048, help="connections the kernel holds before accept (default 2048)")
    p.add_argument("--loop-nice", type=int, default=10,
                   help="how far the HTTP event loop's thread lowers its priority below the decoder's, so that "
                        "under overload admitted work is decoded first (Linux nice, 0..19; default 10; 0: equal)")
    p.add_argument("--threads", type=int, default=None, help="the model's intra-op threads (default: its runtime's)")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes on one socket, each with its own queue and metrics (default 1)")
    p.add_argument("--client", help="client-<id>.onnx the page at / runs in the browser (default: the one beside the model)")
    p.add_argument("--results-table", help="evaluate.py's rate_accuracy.csv: the page shows JPEG at the quality reaching the reference's top-1")
    for name in ("compress", "classify", "decompress", "analyze"):
        sub.choices[name].add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                                       help=f"refuse larger images (default {DEFAULT_MAX_PIXELS} = 4096x4096)")
    for name in ("compress", "classify", "pack", "adapt"):
        p = sub.choices[name]
        p.add_argument("--strict", action="store_true",
                       help="stop at the first unreadable or refused input (default: report it, go on, exit 2)")
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
