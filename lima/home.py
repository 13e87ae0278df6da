"""Where LIMA Studio keeps its state.

One environment variable, ``LIMA_HOME``, names the folder; it defaults to ``~/.lima-studio``.
Everything the product writes lives under it:

    $LIMA_HOME/lima.db      the SQLite log: conversations, turns, ratings, runs, models, verdicts
    $LIMA_HOME/models/      prepared and trained models (one folder each)
    $LIMA_HOME/runs/        training run folders (checkpoints, logs, dev generations)
    $LIMA_HOME/reports/     `lima report` output
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = Path("~/.lima-studio")


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
