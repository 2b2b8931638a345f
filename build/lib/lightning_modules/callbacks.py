"""Callbacks of the training systems (plain Lightning, configured under ``configs/callbacks``)."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl


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
