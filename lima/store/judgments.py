"""Every answer an LLM judge gave, keyed by a hash of exactly what it was asked, so nothing is asked twice.

``protocol`` says what was asked: 'paper-rating' (Fail / Pass / Excellent of one turn),
'helpfulness' (1-6), 'pairwise-conversation' and 'pairwise-turn' (A, B or Neither, in the order
``order`` names: 'left-first' or 'right-first'). ``result`` is the parsed answer, as text.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from sqlite_utils import Database

from lima.store.db import utcnow


@dataclass
class Judgment:
    key: str
    protocol: str
    judge_model: str
    result: str
    raw: str
    judge_url: str | None = None
    comparison_id: str | None = None
    position: int | None = None  # 0: the whole conversation; k: the k-th pair of replies
    turn_id: int | None = None
    order: str | None = None
    created: str | None = None
    probabilities: dict[str, float] | None = None  # each answer's probability, where the judge gave them


def _of(row: dict) -> Judgment:
    found = Judgment(**{f.name: row.get(f.name) for f in fields(Judgment)})
    found.probabilities = json.loads(found.probabilities) if found.probabilities else None
    return found


def get(db: Database, key: str) -> Judgment | None:
    rows = list(db["judgments"].rows_where("key = ?", [key], limit=1)) if db["judgments"].exists() else []
    return _of(rows[0]) if rows else None


def add(db: Database, judgment: Judgment) -> None:
    probabilities = json.dumps(judgment.probabilities) if judgment.probabilities else None
    db["judgments"].insert({**asdict(judgment), "created": judgment.created or utcnow(),
                            "probabilities": probabilities})


def of_protocol(db: Database, protocol_prefix: str, judge_model: str | None = None,
                comparison_id: str | None = None) -> list[Judgment]:
    """The answers of one protocol (or every protocol starting with it, e.g. 'pairwise'), of one
    judge model and one comparison where given, oldest first."""
    if not db["judgments"].exists():
        return []
    where, values = ["protocol like ?"], [protocol_prefix + "%"]
    if judge_model is not None:
        where.append("judge_model = ?")
        values.append(judge_model)
    if comparison_id is not None:
        where.append("comparison_id = ?")
        values.append(comparison_id)
    return [_of(row) for row in db["judgments"].rows_where(" and ".join(where), values, order_by="created")]
