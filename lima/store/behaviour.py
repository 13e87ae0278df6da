"""A run's behaviour figures: its model beside the model it started from (``training/behaviour.py``
measures them), and the replies behind them.

``Figures`` is one model's measurement; ``find`` returns an earlier measurement of the same folder
with the same settings, so a parent (the embedded base, say) is measured once, not every run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from sqlite_utils import Database

from lima.store.db import utcnow

ROLES = ("parent", "model")


@dataclass
class Reply:
    source: str  # "dev" (a development prompt) or "opener" (a turn of an opener conversation)
    prompt_id: str
    turn: int
    prompt: str
    text: str
    tokens: int
    ended: bool  # it ended with a stop token, not at the cap
    loop: bool  # it repeats a run of words over and over
    judge_score: float | None = None


@dataclass
class Figures:
    replies: int
    ended: float | None  # share of replies that ended by themselves
    median_tokens: float | None
    p90_tokens: float | None
    loops: float | None  # share of replies with a repeated-text loop
    references: int  # held-out reference answers the end probabilities were read at
    p_end: float | None  # mean probability of ending the turn where a reference answer ends
    p_eot: float | None  # the same for the EOT token alone (None for a model without it)
    judge_mean: float | None = None
    judged: int = 0
    max_new_tokens: int = 0
    seconds: float = 0.0


@dataclass
class Measured:
    """One stored measurement: whose, what settings, and where its replies were generated."""

    role: str
    model: str
    path: str
    key: str
    measured_in: str
    figures: Figures
    behaviour_id: int


FIGURE_FIELDS = [f.name for f in fields(Figures)]


def save(db: Database, run_id: str, role: str, model: str, path: str, key: str, figures: Figures,
         replies: list[Reply] | None = None, measured_in: str | None = None) -> int:
    """Store ``figures`` as the run's ``role``; with ``replies`` when they were generated in this run
    (``measured_in`` names the run that generated them otherwise)."""
    assert role in ROLES, role
    with db.conn:
        row_id = db["run_behaviour"].insert({
            "run_id": run_id, "role": role, "model": model, "path": path, "key": key,
            "measured_in": measured_in or run_id, **asdict(figures), "created": utcnow()}, replace=False).last_pk
        if replies:
            db["behaviour_replies"].insert_all({"behaviour_id": row_id, **asdict(r)} for r in replies)
    return row_id


def _measured(row: dict) -> Measured:
    return Measured(row["role"], row["model"], row["path"], row["key"], row["measured_in"],
                    Figures(**{k: row[k] for k in FIGURE_FIELDS}), row["id"])


def find(db: Database, path: str, key: str) -> Measured | None:
    """The latest measurement of the folder ``path`` with settings ``key`` generated in its own run."""
    rows = list(db["run_behaviour"].rows_where("path = ? and key = ? and measured_in = run_id", [path, key],
                                               order_by="id desc", limit=1))
    return _measured(rows[0]) if rows else None


def for_run(db: Database, run_id: str) -> dict[str, Measured]:
    """role -> measurement, for the roles the run has."""
    return {row["role"]: _measured(row) for row in db["run_behaviour"].rows_where("run_id = ?", [run_id])}


def for_runs(db: Database, run_ids: list[str]) -> dict[str, dict[str, Measured]]:
    """run id -> role -> measurement, for a page of runs in one query."""
    out: dict[str, dict[str, Measured]] = {}
    if not run_ids:
        return out
    marks = ", ".join("?" for _ in run_ids)
    for row in db["run_behaviour"].rows_where(f"run_id in ({marks})", run_ids):
        out.setdefault(row["run_id"], {})[row["role"]] = _measured(row)
    return out


def replies(db: Database, measured: Measured) -> list[Reply]:
    """The replies behind a measurement (generated in ``measured_in``'s row of the same folder)."""
    rows = list(db["run_behaviour"].rows_where("run_id = ? and path = ? and key = ?",
                                               [measured.measured_in, measured.path, measured.key], limit=1))
    source_id = rows[0]["id"] if rows else measured.behaviour_id
    names = [f.name for f in fields(Reply)]
    return [Reply(**{k: row[k] for k in names} | {"ended": bool(row["ended"]), "loop": bool(row["loop"])})
            for row in db["behaviour_replies"].rows_where("behaviour_id = ?", [source_id], order_by="id")]
