"""Where LIMA Studio keeps its state.

One environment variable, ``LIMA_HOME``, names the folder; it defaults to ``~/.lima-studio``.
Everything the product writes lives under it:

    $LIMA_HOME/lima.db      the SQLite log: conversations, turns, ratings, runs, models, verdicts
    $LIMA_HOME/models/      prepared and trained models (one folder each)
    $LIMA_HOME/runs/        training run folders (checkpoints, logs, dev generations)
    $LIMA_HOME/reports/     `lima report` output

Compiled code (the decoder's inductor cache, the int8 kernel) depends on the machine, not on the
state, so it lives in ``cache_dir()``, shared by every state directory.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = Path("~/.lima-studio")
DEFAULT_CACHE = Path("~/.cache/lima-studio")


def home() -> Path:
    """The state directory, created on first use."""
    path = Path(os.environ.get("LIMA_HOME") or DEFAULT_HOME).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def db_path() -> Path:
    return home() / "lima.db"


def models_dir() -> Path:
    path = home() / "models"
    path.mkdir(exist_ok=True)
    return path


def runs_dir() -> Path:
    path = home() / "runs"
    path.mkdir(exist_ok=True)
    return path


def reports_dir() -> Path:
    path = home() / "reports"
    path.mkdir(exist_ok=True)
    return path


def cache_dir() -> Path:
    """Machine-wide build caches (``LIMA_CACHE``, default ``~/.cache/lima-studio``), created on first use."""
    path = Path(os.environ.get("LIMA_CACHE") or DEFAULT_CACHE).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
