"""`lima experiment`'s records: one ``Experiment`` per run of the paper's section 6, its stage as it
goes, and one ``Held`` per (opener, model) conversation it held, so a rerun resumes where it stopped.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone

from sqlite_utils import Database

from lima.store.db import utcnow


@dataclass
class Experiment:
    id: str
    created: str
    status: str  # running | done | failed | interrupted
    stage: str | None = None
    base: str | None = None
    preset: str | None = None
    judge_url: str | None = None
    judge_model: str | None = None
    max_tokens: int | None = None
    models: dict[str, str] = field(default_factory=dict)  # variant -> model folder
    error: str | None = None
    out_dir: str | None = None
    summary: dict | None = None
    updated: str | None = None


@dataclass
class Held:
    """One conversation an experiment held: an opener with one model."""

    experiment_id: str
    opener_id: str
    model: str
    conversation_id: str | None = None
    comparison_id: str | None = None
    ended: str | None = None


def _of(row: dict) -> Experiment:
    values = {f.name: row[f.name] for f in fields(Experiment)}
    values["models"] = json.loads(values["models"] or "{}")
    values["summary"] = json.loads(values["summary"]) if values["summary"] else None
    return Experiment(**values)


def get(db: Database, experiment_id: str) -> Experiment:
    return _of(db["experiments"].get(experiment_id))


def start_or_resume(db: Database, stage: str, base: str, preset: str, judge_url: str | None,
                    judge_model: str | None, max_tokens: int | None = None) -> tuple[Experiment, bool]:
    """The unfinished experiment with these settings (resumed: status running again), else a new
    one at ``stage``; and whether it was resumed."""
    where = ("status != 'done' and base = ? and preset = ? and coalesce(judge_url, '') = ? "
             "and coalesce(judge_model, '') = ? and coalesce(max_tokens, 0) = ?")
    found = next(db["experiments"].rows_where(where, [base, preset, judge_url or "", judge_model or "",
                                                      max_tokens or 0], order_by="created desc", limit=1), None)
    if found:
        update(db, found["id"], status="running", error=None)
        return get(db, found["id"]), True
    experiment_id = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    now = utcnow()
    db["experiments"].insert({"id": experiment_id, "created": now, "updated": now, "status": "running",
                              "stage": stage, "base": base, "preset": preset, "judge_url": judge_url,
                              "judge_model": judge_model, "max_tokens": max_tokens, "models": "{}"})
    return get(db, experiment_id), False


def update(db: Database, experiment_id: str, **fields) -> None:
    encoded = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in fields.items()}
    db["experiments"].update(experiment_id, {**encoded, "updated": utcnow()})


def latest(db: Database) -> Experiment | None:
    if not db["experiments"].exists():
        return None
    row = next(db["experiments"].rows_where(order_by="created desc", limit=1), None)
    return _of(row) if row else None


def held(db: Database, experiment_id: str) -> list[Held]:
    """The conversations an experiment has held so far, by opener then model."""
    return [Held(**{f.name: row[f.name] for f in fields(Held)})
            for row in db["experiment_conversations"].rows_where("experiment_id = ?", [experiment_id],
                                                                 order_by="opener_id, model")]


def record_held(db: Database, experiment_id: str, opener_id: str, model: str, conversation_id: str) -> None:
    """A finished conversation of the experiment (held again only if this row is missing)."""
    db["experiment_conversations"].upsert(
        {"experiment_id": experiment_id, "opener_id": opener_id, "model": model, "conversation_id": conversation_id,
         "ended": utcnow()}, pk=("experiment_id", "opener_id", "model"))


def link_comparison(db: Database, experiment_id: str, opener_id: str, model: str, comparison_id: str) -> None:
    db["experiment_conversations"].update((experiment_id, opener_id, model), {"comparison_id": comparison_id})
