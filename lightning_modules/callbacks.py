"""Callbacks of the training systems (plain Lightning, configured under ``configs/callbacks``)."""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch


class EpochClock(pl.Callback):
    """Logs the training wall time so far (``time/elapsed_s``) at the end of every epoch.

    The total is kept in checkpoints, so a run resumed from ``last.ckpt`` in a later session
    continues its count and the learning curve reports real cumulative time, not session time.
    """

    def __init__(self) -> None:
        self.elapsed = 0.0
        self._start: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.monotonic()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # validation runs inside the training epoch; count it too and log with the epoch's metrics
        if self._start is None or trainer.sanity_checking:
            return
        now = time.monotonic()
        self.elapsed += now - self._start
        self._start = now
        pl_module.log("time/elapsed_s", self.elapsed, on_epoch=True, on_step=False)

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.elapsed = float(state_dict.get("elapsed", 0.0))


class ResumeRngState(pl.Callback):
    """Makes a run resumed from a checkpoint train exactly as if it had never stopped.

    Lightning restores the weights, the optimiser and the loops, but not the random number
    generators: a resumed run re-seeds them and so draws other shuffles, augmentations and
    quantisation noise than the uninterrupted run would have, and ends with other weights. This
    keeps the generators' states (Python, NumPy, torch and CUDA) in every checkpoint and puts them
    back before the first training batch is drawn. The sanity check's validation pass draws from
    them too (a data loader's worker seed), so they are put back again once it has run. A run of
    several processes (DDP) saves rank 0's state only, so there the guarantee is the single
    process's.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()  # as plain values: checkpoints load weights_only
        numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}  # fmt: skip
        state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict
        self._restore()

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pending = None  # the training loop has drawn its first epoch: from here on the state is live

    def _restore(self) -> None:
        if self._pending is None:
            return
        state = self._pending
        random.setstate(state["python"])
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
