"""An exported ONNX graph and the ``.npz`` of tables beside it, opened and checked once for both ends.

The torch-free client (``client-<id>.onnx``) and the torch-free server (``server-<id>.onnx``) are
each a graph plus the entropy model's tables; both refuse a missing half, an unreadable file and
another tables version the same way. numpy and onnxruntime only: no torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from taskcodec.errors import CheckpointError, ConfigError


def open_onnx_export(onnx_path: str | os.PathLike, role: str, remake: str, extra: str, version: int,
                     threads: int, spin: bool = True, arena: bool = True):  # fmt: skip
    """``(session, tables)`` of ``onnx_path`` and the ``.npz`` beside it.

    Args:
        role: "client" or "server", for messages.
        remake: the command that writes the pair, named in every message.
        extra: the pip extra that installs onnxruntime.
        version: the tables version this taskcodec reads.
        threads: intra-op threads (0: onnxruntime's default).
        spin: whether idle intra-op threads spin (a server sharing cores with its event loop: no).
        arena: onnxruntime's CPU memory arena, which keeps the largest batch's activations for good (a
            long-lived server: no, so its RSS follows the batches it computes; 16 MB less at batches of 8).

    Raises:
        CheckpointError: a missing or unreadable file, or tables of another version.
        ConfigError: onnxruntime is not installed.
    """
    onnx_path = Path(onnx_path)
    tables_path = onnx_path.with_suffix(".npz")
    if not onnx_path.is_file() or not tables_path.is_file():
        raise CheckpointError(f"{onnx_path} and {tables_path.name} beside it are needed; make them with `{remake}`")
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ConfigError(f'the torch-free {role} needs onnxruntime: pip install "taskcodec[{extra}]"') from e
    try:
        with np.load(tables_path, allow_pickle=False) as t:
            tables = {k: t[k] for k in t.files}
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {tables_path} as a {role}'s tables ({e}); re-export it with `{remake}`") from e
    if int(tables.get("version", -1)) != version:
        raise CheckpointError(f"{tables_path} is ONNX {role} tables version {tables.get('version')}, this taskcodec "
                              f"reads {version}; re-export it with this taskcodec (`{remake}`)")  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(0, int(threads))
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = arena
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        raise CheckpointError(f"cannot load {onnx_path}: {e}; re-export it with `{remake}`") from e
    return session, tables
