"""Training runs as records in the state database: what went in, progress, how it ended.

Status moves running -> done | failed | cancelled. Only one run may be running at a time: a
second start is refused while the first's process is alive; a run whose process died without
saying so (killed, machine rebooted) is marked failed when the next one checks.
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import datetime, timezone

from sqlite_utils import Database

from lima import home
from lima.store import utcnow
from lima.store.db import write_lock

STATUSES = ("running", "done", "failed", "cancelled")


class RunRefused(RuntimeError):
    """A run cannot start now (another is running); the message says which."""


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


def running(db: Database) -> dict | None:
    """The run in progress, after marking runs whose process has vanished as failed."""
    for row in db["runs"].rows_where("status = 'running'", order_by="started"):
        if pid_alive(row["pid"]):
            return row
        finish(db, row["id"], "failed", error="the training process ended without reporting (killed or crashed)")
    return None


def start(db: Database, run_id: str, **fields) -> None:
    """Record a new running run, refusing if another one is running."""
    # The file lock makes check-then-insert atomic across processes (two clicks, two terminals).
    with open(home.runs_dir() / ".start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = running(db)
        if current is not None:
            raise RunRefused(f"a retrain is already running: run {current['id']} ({current['variant']}, "
                             f"pid {current['pid']}); wait for it or cancel it first")
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
    """Ask a running run to stop at its next step; False if it is not running."""
    row = db["runs"].get(run_id)
    if row["status"] != "running":
        return False
    db["runs"].update(run_id, {"cancel_requested": 1, "updated": utcnow()})
    return True


def cancel_requested(db: Database, run_id: str) -> bool:
    row = db.execute("select cancel_requested from runs where id = ?", [run_id]).fetchone()
    return bool(row and row[0])


def get(db: Database, run_id: str) -> dict:
    row = db["runs"].get(run_id)
    for key in ("config", "dataset_counts", "rating_ids", "eot_fit"):
        if row.get(key):
            row[key] = json.loads(row[key])
    return row


def history(db: Database, limit: int = 50) -> list[dict]:
    return list(db["runs"].rows_where(order_by="started desc", limit=limit))


def tokens_per_second(db: Database, run_id: str) -> float | None:
    """Real training tokens per second between the first and the last logged step."""
    rows = list(db["run_progress"].rows_where("run_id = ? and tokens is not null", [run_id], order_by="step"))
    if len(rows) < 2:
        return None
    from datetime import datetime

    seconds = (datetime.fromisoformat(rows[-1]["time"]) - datetime.fromisoformat(rows[0]["time"])).total_seconds()
    return (rows[-1]["tokens"] - rows[0]["tokens"]) / seconds if seconds > 0 else None


def losses(db: Database, run_id: str) -> list[dict]:
    return list(db["run_progress"].rows_where("run_id = ? and loss is not null", [run_id], order_by="step",
                                              select="step, epoch, loss, learning_rate, reward_margin"))


def _encode(fields: dict) -> dict:
    return {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in fields.items()}
