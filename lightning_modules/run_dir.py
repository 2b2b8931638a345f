"""A training run's folder as a pipeline step: resume it where it stopped, mark it finished once.

A run folder holds ``checkpoints/last.ckpt`` while it trains (Lightning's ``save_last``) and, once
it has finished, ``checkpoints/final.ckpt`` (the full training state at the end),
``checkpoints/best.ckpt`` (the best hold-out checkpoint, under a name that does not change with
the epoch) and ``result.json``. Finishing removes ``last.ckpt``, which ``final.ckpt`` supersedes, so
the folder says which of three states it is in:

* unfinished (``last.ckpt``, no ``result.json``): ``resume=true`` continues from ``last.ckpt`` (a
  run that stopped after fitting, in its test or export, fits nothing more and goes on from there);
* finished (``result.json``): ``resume=true`` has nothing to do and returns the stored result, so
  a pipeline stage re-run because its code changed never trains (or deletes) a finished model;
* empty (or ``result.json`` removed by hand): training starts from scratch.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from taskcodec.errors import ConfigError
from taskcodec.provenance import write_json


def resume_point(output_dir: str | Path, ckpt_path: str | None, resume: bool) -> tuple[str | None, dict | None]:
    """``(checkpoint to resume from, stored result of a finished run)``; at most one is not None.

    An explicit ``ckpt_path`` always wins (continue a finished run for more epochs, or start from
    another run's state); ``resume`` only looks in ``output_dir``.
    """
    if ckpt_path:
        if not Path(ckpt_path).is_file():
            raise ConfigError(f"ckpt_path={ckpt_path} does not exist; give a run's checkpoints/last.ckpt "
                              "(or final.ckpt) to resume, or null")  # fmt: skip
        return str(ckpt_path), None
    if not resume:
        return None, None
    out = Path(output_dir)
    stored = out / "result.json"
    if stored.is_file():
        return None, json.loads(stored.read_text())
    last = out / "checkpoints" / "last.ckpt"
    return (str(last), None) if last.is_file() else (None, None)


def finish_run(output_dir: str | Path, best_ckpt: str, result: dict) -> dict:
    """Give the best checkpoint its stable name, store the result, drop ``last.ckpt`` (``final.ckpt`` has it)."""
    out = Path(output_dir)
    ckpts = out / "checkpoints"
    best = ckpts / "best.ckpt"
    if Path(best_ckpt).resolve() != best.resolve():
        tmp = ckpts / ".best.ckpt.part"
        tmp.unlink(missing_ok=True)
        try:
            os.link(best_ckpt, tmp)  # a second name for the same file: no copy of a 100 MB checkpoint
        except OSError:
            shutil.copyfile(best_ckpt, tmp)
        os.replace(tmp, best)
    result = {**result, "best_ckpt": str(best)}
    write_json(out / "result.json", result)
    (ckpts / "last.ckpt").unlink(missing_ok=True)
    return result
