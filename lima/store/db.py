"""Open the state database: WAL mode, foreign keys on, migrations applied.

Every caller opens its own connection (``connect()``): sqlite3 connections refuse to cross
threads, and Gradio handlers, the service and the training process all run on different threads
or processes. WAL plus a busy timeout lets those writers take turns without losing a row.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sqlite_utils import Database

from lima import home
from lima.store.migrations import migrations

_migrated: set[str] = set()
_migrate_lock = threading.Lock()


def utcnow() -> str:
    """ISO-8601 UTC timestamp with milliseconds, the only time format in the database."""
    return as_logged(datetime.now(timezone.utc))


def as_logged(moment: datetime) -> str:
    """``moment`` (aware) in the database's time format, so it compares with stored times as text."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@contextmanager
def write_lock(db: Database):
    """A transaction that takes the write lock first (BEGIN IMMEDIATE), so a check-then-write sees
    the latest rows even when another thread or process writes at the same moment."""
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    if db.conn.in_transaction:
        db.conn.execute("COMMIT")


@contextmanager
def snapshot(db: Database):
    """Several reads that see one state of the database (a read transaction), even while another
    process rates or rewrites in between: a training set is built from one moment of the log.
    Inside a transaction already, it reads in that one."""
    if db.conn.in_transaction:
        yield db
        return
    db.conn.execute("BEGIN")
    try:
        yield db
    finally:
        if db.conn.in_transaction:
            db.conn.execute("COMMIT")


def connect(path: str | Path | None = None) -> Database:
    """A fresh connection to the state database (``$LIMA_HOME/lima.db`` by default)."""
    path = Path(path) if path else home.db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
    db = Database(conn)
    db.execute("PRAGMA busy_timeout = 30000")
    db.execute("PRAGMA foreign_keys = ON")
    key = str(path.resolve())
    if key not in _migrated:
        with _migrate_lock:
            db.enable_wal()
            migrations.apply(db)
            _migrated.add(key)
    return db
