"""Training runs as records: what went in, progress, how it ended, and the development answers.

Status moves running -> done | failed | cancelled. Only one run may be running at a time: a
second start is refused while the first's process is alive; a run whose process died without
saying so (killed, machine rebooted) is marked failed when the next one checks. Rows come back
as ``Run``, ``Progress`` and ``DevGeneration``; the JSON columns (config, dataset counts, rating
ids, the EOT fits) come back decoded.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import Any

from sqlite_utils import Database

from lima import home
from lima.store.db import utcnow, write_lock

STATUSES = ("running", "done", "failed", "cancelled")
JSON_COLUMNS = ("config", "dataset_counts", "rating_ids", "eot_fit")


class RunRefused(RuntimeError):
    """A run cannot start now (another is running); the message says which."""


@dataclass
class Run:
    id: str
    variant: str
    preset: str
    status: str
    started: str
    stage: str | None = None  # sft (None for runs older than the preference stages), kto or dpo
    base: str | None = None
    from_model: str | None = None
    chains: str | None = None
    error: str | None = None
    warning: str | None = None  # why its model is worse than the one it came from
    activity: str | None = None  # what it does after its last step ("measuring ...")
    config: Any = None
    dataset_sha256: str | None = None
    dataset_counts: Any = None
    rating_ids: Any = None
    eot_fit: Any = None
    examples: int | None = None
    ended: str | None = None
    updated: str | None = None
    pid: int | None = None
    output_dir: str | None = None
    model_name: str | None = None
    model_path: str | None = None
    selected_checkpoint: str | None = None
    selection: str | None = None
    cancel_requested: int = 0
    step: int | None = None
    max_steps: int | None = None
    epoch: float | None = None
    loss: float | None = None
    learning_rate: float | None = None
    eta_seconds: float | None = None

    @classmethod
    def of(cls, row: dict) -> "Run":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in row.items() if k in known}
        for key in JSON_COLUMNS:
            if isinstance(values.get(key), str):
                values[key] = json.loads(values[key])
        return cls(**values)


@dataclass
class Progress:
    """One logged training step."""

    step: int
    epoch: float | None
    loss: float | None
    learning_rate: float | None
    reward_margin: float | None = None
    max_steps: int | None = None
    grad_norm: float | None = None
    eta_seconds: float | None = None
    tokens: int | None = None
    time: str | None = None


@dataclass
class DevGeneration:
    """What a kept checkpoint answered to one development prompt, and how it was judged."""

    run_id: str
    checkpoint: str
    epoch: float
    prompt_id: str
    prompt: str
    output: str
    judge_score: float | None = None
    judge_raw: str | None = None


def new_id(variant: str) -> str:
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{variant}-{os.urandom(2).hex()}"


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (finished but not yet reaped by its parent) is not a running training.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def running(db: Database) -> Run | None:
    """The run in progress, after marking runs whose process has vanished as failed."""
    close_vanished(db)
    found = db["runs"].rows_where("status = 'running'", order_by="started", limit=1)
    return next((Run.of(row) for row in found), None)


def close_vanished(db: Database, status: str = "failed",
                   error: str = "the training process ended without reporting (killed or crashed)",
                   pids: list[int] | None = None) -> list[str]:
    """Runs recorded as running whose process is gone (of ``pids`` only, when given): finished
    with ``status`` and ``error``."""
    gone = [row["id"] for row in db["runs"].rows_where("status = 'running'", order_by="started")
            if not pid_alive(row["pid"]) and (pids is None or row["pid"] in pids)]
    for run_id in gone:
        finish(db, run_id, status, error=error)
    return gone


def start(db: Database, run_id: str, **fields) -> None:
    """Record a new running run, refusing if another one is running."""
    # The file lock makes check-then-insert atomic across processes (two clicks, two terminals).
    with open(home.runs_dir() / ".start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = running(db)
        if current is not None:
            raise RunRefused(f"a retrain is already running: run {current.id} ({current.variant}, "
                             f"pid {current.pid}); wait for it or cancel it first")
        now = utcnow()
        db["runs"].insert({"id": run_id, "status": "running", "started": now, "updated": now, "pid": os.getpid(),
                           "cancel_requested": 0, **_encode(fields)})


def update(db: Database, run_id: str, **fields) -> None:
    db["runs"].update(run_id, {**_encode(fields), "updated": utcnow()})


def progress(db: Database, run_id: str, step: int, max_steps: int, epoch: float, loss: float | None,
             learning_rate: float | None, grad_norm: float | None, eta_seconds: float | None,
             tokens: int | None = None, reward_margin: float | None = None) -> None:
    now = utcnow()
    # BEGIN IMMEDIATE and plain statements: a deferred transaction that reads (sqlite-utils looks up
    # the schema before inserting) and then writes fails at once with "database is locked" when
    # another connection (the UI polling, a cancel) committed in between.
    with write_lock(db):
        db.conn.execute(
            "insert into run_progress (run_id, step, max_steps, epoch, loss, learning_rate, grad_norm, "
            "eta_seconds, tokens, reward_margin, time) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, step, max_steps, epoch, loss, learning_rate, grad_norm, eta_seconds, tokens, reward_margin, now])
        db.conn.execute(
            "update runs set step = ?, max_steps = ?, epoch = ?, eta_seconds = ?, updated = ?, "
            "loss = coalesce(?, loss), learning_rate = coalesce(?, learning_rate) where id = ?",
            [step, max_steps, epoch, eta_seconds, now, loss, learning_rate if loss is not None else None, run_id])


def finish(db: Database, run_id: str, status: str, error: str | None = None, **fields) -> None:
    assert status in STATUSES[1:], status
    db["runs"].update(run_id, {"status": status, "error": error, "ended": utcnow(), "updated": utcnow(),
                               **_encode(fields)})


def request_cancel(db: Database, run_id: str) -> bool:
    """Ask a running run to stop at its next step; False if it is not running (or there is none)."""
    found = find(db, run_id)
    if found is None or found.status != "running":
        return False
    db["runs"].update(run_id, {"cancel_requested": 1, "updated": utcnow()})
    return True


def cancel_requested(db: Database, run_id: str) -> bool:
    row = db.execute("select cancel_requested from runs where id = ?", [run_id]).fetchone()
    return bool(row and row[0])


def find(db: Database, run_id: str) -> Run | None:
    rows = list(db["runs"].rows_where("id = ?", [run_id], limit=1))
    return Run.of(rows[0]) if rows else None


def get(db: Database, run_id: str) -> Run:
    found = find(db, run_id)
    if found is None:
        raise KeyError(f"there is no run {run_id}")
    return found


def history(db: Database, limit: int = 50) -> list[Run]:
    return [Run.of(row) for row in db["runs"].rows_where(order_by="started desc", limit=limit)]


def latest_done(db: Database, stages: tuple[str, ...]) -> Run | None:
    """The latest run of one of ``stages`` that finished with a model."""
    marks = ", ".join("?" for _ in stages)
    rows = list(db["runs"].rows_where(f"status = 'done' and stage in ({marks})", list(stages),
                                      order_by="ended desc", limit=1))
    return Run.of(rows[0]) if rows else None


def steps(db: Database, run_id: str) -> list[Progress]:
    """Every logged step of a run, in order."""
    names = [f.name for f in fields(Progress)]
    return [Progress(**{k: row[k] for k in names})
            for row in db["run_progress"].rows_where("run_id = ?", [run_id], order_by="step")]


def losses(db: Database, run_id: str) -> list[Progress]:
    """The steps that logged a loss, for the loss (and reward-margin) chart."""
    return [p for p in steps(db, run_id) if p.loss is not None]


def tokens_per_second(db: Database, run_id: str) -> float | None:
    """Real training tokens per second between the first and the last logged step."""
    rows = [p for p in steps(db, run_id) if p.tokens is not None]
    if len(rows) < 2:
        return None
    seconds = (datetime.fromisoformat(rows[-1].time) - datetime.fromisoformat(rows[0].time)).total_seconds()
    return (rows[-1].tokens - rows[0].tokens) / seconds if seconds > 0 else None


def add_dev_generation(db: Database, generation: DevGeneration) -> None:
    db["dev_generations"].insert({**asdict(generation), "created": utcnow()})


def dev_generations(db: Database, run_id: str) -> list[DevGeneration]:
    names = [f.name for f in fields(DevGeneration)]
    return [DevGeneration(**{k: row[k] for k in names})
            for row in db["dev_generations"].rows_where("run_id = ?", [run_id], order_by="id")]


def _encode(fields: dict) -> dict:
    return {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in fields.items()}
