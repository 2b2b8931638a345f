"""Where a result came from, and the arguments every study script shares.

The bench/ scripts are stages of one study pipeline; they share the data default, the thread setting
and the provenance record here, so a results folder always says which command and revision made it.
Plain Python: importing it does not import torch, so reading arguments and writing a record stay cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREADS_HELP = "torch threads; the ratios, not the absolute speeds, are the result"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def run_provenance(**extra) -> dict:
    """``{"command", "git_revision", "git_dirty", **extra}`` of this process, for a results folder.

    ``git_dirty`` is true when tracked files that make results differ from the revision (untracked
    files do not count, nor do ``results/`` and ``dvc.lock``, which a study rewrites as it runs); the
    revision is ``"unknown"`` outside a git checkout.
    """
    return {
        "command": " ".join(["python", *sys.argv]),
        "git_revision": _git("rev-parse", "HEAD") or "unknown",
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results", ":!dvc.lock")),
        **extra,
    }


def write_json(path: str | os.PathLike, obj, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON (``indent`` 1; ``None``: one line) to ``path``, creating parent folders.

    The file is written to a temporary name beside ``path`` and then renamed, so an interrupted run
    never leaves a half-written record that looks like a finished one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=indent)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_provenance(path: str | os.PathLike, **extra) -> dict:
    """Write :func:`run_provenance` to ``path`` with :func:`write_json` (atomically) and return it."""
    record = run_provenance(**extra)
    write_json(path, record)
    return record


#: the datasets a study script reads (``--dataset``): each one's copy beside the checkout
STUDY_DATASETS = {"tiny_imagenet": "tiny-imagenet-100.zip", "imagenette": "imagenette-160.zip"}


def default_data(dataset: str = "tiny_imagenet") -> str:
    """The copy of ``dataset`` the studies read: for Tiny ImageNet ``$TASKCODEC_DATA``, else the shared copy beside the checkout.

    One default for every script, so moving the data means setting one variable, not editing each script.
    """
    if dataset == "tiny_imagenet" and os.environ.get("TASKCODEC_DATA"):
        return os.environ["TASKCODEC_DATA"]
    return str(ROOT.parent / "shared" / "data" / STUDY_DATASETS[dataset])


def bench_parser(
    doc: str | None, *, out: str | None = None, threads: int | None = 1, data: bool = True
) -> argparse.ArgumentParser:
    """A parser with the flags every study script shares: ``--out``, ``--data`` and ``--threads``.

    Args:
        doc: the script's docstring, shown verbatim by ``--help`` (it says what the study measures).
        out: default results folder or file; ``None`` makes ``--out`` required.
        threads: default torch thread count (a script timed on one core keeps 1); ``None`` for a script
            that runs no torch work, so it has no ``--threads`` flag that would do nothing.
        data: whether the script reads the dataset (adds ``--data``).
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if out is None:
        parser.add_argument("--out", required=True, help="results folder or file")
    else:
        parser.add_argument("--out", default=out, help="results folder or file (default: %(default)s)")
    if data:
        parser.add_argument(
            "--dataset", default="tiny_imagenet", choices=sorted(STUDY_DATASETS),
            help="which dataset (a configs/data name) the scripts that take one read (default: %(default)s)",
        )  # fmt: skip
        parser.add_argument(
            "--data",
            default=None,
            help=f"the dataset's zip or folder (default: the shared copy, {default_data()} for Tiny ImageNet; "
                 "$TASKCODEC_DATA sets that one)",
        )  # fmt: skip
    if threads is not None:
        parser.add_argument(
            "--threads", type=int, default=threads, help=f"{THREADS_HELP} (default: %(default)s)"
        )
    return parser


def start_bench(args: argparse.Namespace) -> None:
    """Apply the shared flags before any work: torch's thread count from ``--threads``, when there is one.

    torch is imported here, not at module level, so this module stays importable without it, and a
    parser built with ``threads=None`` does not import it at all.
    """
    if hasattr(args, "data") and args.data is None:
        args.data = default_data(getattr(args, "dataset", "tiny_imagenet"))
    if getattr(args, "threads", None) is None:
        return
    import torch

    torch.set_num_threads(args.threads)
