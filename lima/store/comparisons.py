"""Comparisons: two linked conversations fed the same user turns, and the whole-conversation verdict.

The verdict is always stored in model terms ('left', 'right' or 'tie' of ``left_model`` and
``right_model``), whatever a blind session displayed. ``evaluation/comparisons.py`` runs the
sessions; this module is the only code that reads or writes the table.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields

from sqlite_utils import Database

from lima.store.db import utcnow

VERDICTS = ("left", "right", "tie")


@dataclass
class Comparison:
    id: str
    created: str
    left_model: str
    right_model: str
    left_conversation: str
    right_conversation: str
    opener_id: str | None = None
    kind: str = "live"  # live | replay | before-after | experiment
    blind: int = 0
    swapped: int = 0
    verdict: str | None = None
    verdict_rater: str | None = None
    verdict_time: str | None = None


def _of(row: dict) -> Comparison:
    return Comparison(**{f.name: row[f.name] for f in fields(Comparison)})


def create(db: Database, left_model: str, right_model: str, left_conversation: str, right_conversation: str,
           opener_id: str | None = None, kind: str = "live", blind: bool = False, swapped: bool = False) -> str:
    """Record a comparison linking two conversations; returns its id."""
    comparison_id = uuid.uuid4().hex[:16]
    db["comparisons"].insert({"id": comparison_id, "created": utcnow(), "opener_id": opener_id,
                              "left_model": left_model, "right_model": right_model, "blind": int(blind),
                              "swapped": int(swapped), "kind": kind, "left_conversation": left_conversation,
                              "right_conversation": right_conversation})
    return comparison_id


def record_verdict(db: Database, comparison_id: str, verdict: str, rater: str | None) -> None:
    """``verdict`` in model terms: 'left', 'right' or 'tie'."""
    if verdict not in VERDICTS:
        raise ValueError(f"a verdict is 'left', 'right' or 'tie', got {verdict!r}")
    db["comparisons"].update(comparison_id, {"verdict": verdict, "verdict_rater": rater, "verdict_time": utcnow()})


def get(db: Database, comparison_id: str) -> Comparison:
    return _of(db["comparisons"].get(comparison_id))


def every(db: Database, with_verdict: bool = False) -> list[Comparison]:
    """All comparisons, oldest first (only those with a verdict, if asked)."""
    if not db["comparisons"].exists():
        return []
    where = "verdict is not null" if with_verdict else None
    return [_of(row) for row in db["comparisons"].rows_where(where, order_by="created")]
