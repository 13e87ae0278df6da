"""Trainer callbacks: progress to the database, cancellation, and the checkpoint window."""

from __future__ import annotations

import logging
import time

from transformers import TrainerCallback

from lima.store import Busy, runs

log = logging.getLogger("lima.train")


class DatabaseProgress(TrainerCallback):
    """Writes step, epoch, loss, learning rate, ETA (and a preference stage's reward margin) for the
    UI; stops when a cancel is asked.

    Worker ranks of a distributed run (``writes=False``) only read the cancel flag, so every rank
    stops at the same step."""

    def __init__(self, db, run_id: str, writes: bool = True):
        self.db, self.run_id, self.writes = db, run_id, writes
        self.started = None
        self.cancelled = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()
        if self.writes:
            runs.update(self.db, self.run_id, step=0, max_steps=state.max_steps, epoch=0.0)

    def _eta(self, state) -> float | None:
        if not state.global_step or not self.started:
            return None
        per_step = (time.monotonic() - self.started) / state.global_step
        return round(per_step * (state.max_steps - state.global_step), 1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs or not self.writes:
            return
        tokens = logs.get("num_tokens")
        try:
            runs.progress(self.db, self.run_id, state.global_step, state.max_steps, round(state.epoch or 0, 4),
                          logs.get("loss"), logs.get("learning_rate"), logs.get("grad_norm"), self._eta(state),
                          int(tokens) if tokens is not None else None,
                          logs.get("rewards/margins"))  # KTO and DPO: how far the chosen lead the rejected
        except Busy as exc:  # a missed progress row must never stop the training
            log.warning("progress of step %d not recorded: %s", state.global_step, exc)

    def on_step_end(self, args, state, control, **kwargs):
        if runs.cancel_requested(self.db, self.run_id):
            self.cancelled = True
            control.should_training_stop = True
            control.should_save = False


class CheckpointWindow(TrainerCallback):
    """Save at the end of the epochs in [first, last] only (the paper keeps epochs 5 to 10)."""

    def __init__(self, first: int, last: int, progress: DatabaseProgress):
        self.first, self.last, self.progress = first, last, progress
        self.saved: dict[int, int] = {}  # epoch -> global step of its checkpoint

    def on_epoch_end(self, args, state, control, **kwargs):
        epoch = round(state.epoch or 0)
        control.should_save = self.first <= epoch <= self.last and not self.progress.cancelled
        if control.should_save:
            self.saved[epoch] = state.global_step
