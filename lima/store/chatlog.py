"""The chat log: conversations, turns, ratings (with their history) and rewrites.

Every function takes a connection from ``lima.store.connect()``, so callers on any thread or in
any process can write; a rating is one row per click, the latest one counts.
"""

from __future__ import annotations

import json
import uuid

from sqlite_utils import Database

from lima.paper import LABELS
from lima.store.db import utcnow, write_lock


class LogError(ValueError):
    """A write the log refuses (unknown turn, bad label); the message says which."""


def new_conversation(db: Database, model: str, rater: str | None = None, opener_id: str | None = None,
                     source: str = "chat", replay_of: str | None = None, title: str | None = None) -> str:
    conversation_id = uuid.uuid4().hex[:16]
    now = utcnow()
    db["conversations"].insert({"id": conversation_id, "created": now, "updated": now, "model": model,
                                "opener_id": opener_id, "rater": rater, "title": (title or "")[:120],
                                "source": source, "replay_of": replay_of})
    return conversation_id


def add_turn(db: Database, conversation_id: str, role: str, content: str, model: str | None = None,
             params: dict | None = None, status: str = "complete", **metrics) -> int:
    """Append a turn at the next position (one statement, so concurrent writers never collide)."""
    if role not in ("user", "assistant"):
        raise LogError(f"role must be 'user' or 'assistant', got {role!r}")
    if db["conversations"].count_where("id = ?", [conversation_id]) == 0:
        raise LogError(f"there is no conversation {conversation_id!r}")
    now = utcnow()
    columns = {"conversation_id": conversation_id, "role": role, "content": content, "model": model,
               "params": json.dumps(params) if params else None, "status": status, "created": now, "updated": now,
               **metrics}
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    with write_lock(db):
        cursor = db.conn.execute(
            f"insert into turns ({names}, position) select {marks}, "
            "coalesce(max(position) + 1, 0) from turns where conversation_id = ?",
            [*columns.values(), conversation_id])
        db.conn.execute("update conversations set updated = ? where id = ?", [now, conversation_id])
    return cursor.lastrowid


def update_turn(db: Database, turn_id: int, **fields) -> None:
    db["turns"].update(turn_id, {**fields, "updated": utcnow()})


def _assistant_turn(db: Database, turn_id) -> dict:
    if not isinstance(turn_id, int):
        raise LogError(f"turn id must be an integer, got {turn_id!r}")
    rows = list(db["turns"].rows_where("id = ?", [turn_id]))
    if not rows:
        raise LogError(f"there is no turn {turn_id}")
    if rows[0]["role"] != "assistant":
        raise LogError(f"turn {turn_id} is a user turn; only assistant turns are rated or rewritten")
    return rows[0]


JUDGE = "judge:"  # a judge's rater name is "judge:<model>"; a person's never starts so


def turn(db: Database, turn_id: int) -> dict:
    """One turn as logged."""
    return db["turns"].get(turn_id)


def current_rating(db: Database, turn_id: int) -> str | None:
    row = db.execute("select label from current_ratings where turn_id = ?", [turn_id]).fetchone()
    return row[0] if row else None


def rate(db: Database, turn_id: int, label: str | None, rater: str | None = None) -> bool:
    """Record a rating change; ``None`` clears the rating (kept in the history too). A click that
    repeats the rater's own latest label changes nothing and adds no row (a second rater giving the
    same label is a row: their agreement is measured). True when a row was written."""
    if label is not None and label not in LABELS:
        raise LogError(f"a rating is one of {', '.join(LABELS)}, got {label!r}")
    if rater and rater.startswith(JUDGE):
        raise LogError(f"rater names beginning with '{JUDGE}' are kept for judges; choose another name")
    _assistant_turn(db, turn_id)
    # The check and the insert in one locked transaction: the chatbot may send one click twice at once.
    with write_lock(db):
        cursor = db.conn.execute(
            "insert into ratings (turn_id, label, rater, created) select ?, ?, ?, ? "
            "where (select label from ratings where turn_id = ? and rater is ? order by id desc limit 1) is not ?",
            [turn_id, label, rater, utcnow(), turn_id, rater, label])
    return cursor.rowcount == 1


def judge_rate(db: Database, turn_id: int, label: str, judge_model: str, judgment: str) -> None:
    """A judge's rating, linked to its raw answer (``judgments.key``). Once per turn and judge: a
    resumed experiment does not rate again. Never a person's current rating."""
    if label not in LABELS:
        raise LogError(f"a rating is one of {', '.join(LABELS)}, got {label!r}")
    _assistant_turn(db, turn_id)
    rater = JUDGE + judge_model
    with write_lock(db):
        db.conn.execute(
            "insert into ratings (turn_id, label, rater, created, judgment) select ?, ?, ?, ?, ? "
            "where not exists (select 1 from ratings where turn_id = ? and rater = ?)",
            [turn_id, label, rater, utcnow(), judgment, turn_id, rater])


def judge_ratings(db: Database, judge_model: str) -> dict[int, str]:
    """turn id -> the label ``judge_model`` gave it."""
    return {row["turn_id"]: row["label"] for row in db["ratings"].rows_where(
        "rater = ?", [JUDGE + judge_model], order_by="id")}


def rewrite(db: Database, turn_id: int, content: str, rater: str | None = None) -> None:
    if not isinstance(content, str) or not content.strip():
        raise LogError("a rewrite needs text")
    _assistant_turn(db, turn_id)
    db["rewrites"].insert({"turn_id": turn_id, "content": content, "rater": rater, "created": utcnow()})


def rating_history(db: Database, turn_id: int) -> list[dict]:
    return list(db["ratings"].rows_where("turn_id = ?", [turn_id], order_by="id"))


# A cut-short reply that a retry answered anew stays in the log, kept out of the conversation.
REPLACED = "replaced"
SHOWN = f"t.status != '{REPLACED}'"


def turns(db: Database, conversation_id: str) -> list[dict]:
    """Turns in order, each with its current rating and rewrite (a replaced reply left out)."""
    return list(db.query(f"""
        select t.*, cr.label as rating,
               (select content from rewrites w where w.turn_id = t.id order by w.id desc limit 1) as rewrite
        from turns t left join current_ratings cr on cr.turn_id = t.id
        where t.conversation_id = ? and {SHOWN} order by t.position""", [conversation_id]))


def conversation(db: Database, conversation_id: str) -> dict | None:
    rows = list(db["conversations"].rows_where("id = ?", [conversation_id]))
    if not rows:
        return None
    return {**rows[0], "turns": turns(db, conversation_id)}


def recent(db: Database, limit: int = 50, source: str | tuple[str, ...] | None = None) -> list[dict]:
    sources = (source,) if isinstance(source, str) else source
    where, args = (f"source in ({', '.join('?' for _ in sources)})", list(sources)) if sources else (None, [])
    return list(db["conversations"].rows_where(where, args, order_by="updated desc", limit=limit))


def mark_interrupted(db: Database) -> int:
    """Turns still marked streaming belong to a process that died: keep their text, say so."""
    cursor = db.execute("update turns set status = 'interrupted' where status = 'streaming'")
    return cursor.rowcount


def all_conversations(db: Database, openers_only: bool = False, sources: tuple[str, ...] = ("chat", "compare",
                                                                                            "replay")) -> list[dict]:
    where = f"source in ({', '.join('?' for _ in sources)})" + (" and opener_id is not null" if openers_only else "")
    rows = db["conversations"].rows_where(where, list(sources), order_by="created")
    return [{**row, "turns": turns(db, row["id"])} for row in rows]


def rated_replies(db: Database, models: list[str] | None = None, openers_only: bool = False) -> list[dict]:
    """Assistant turns a person rated or rewrote (judges never count): each with its current rating
    (``rating_id``, ``label``, ``rater``, ``rated``) and latest rewrite (``rewrite_id``, ``rewrite``,
    ``rewriter``, ``rewritten``). Filters: the replying models, conversations that start from an
    evaluation opener."""
    where, args = ["t.role = 'assistant'", SHOWN, "(cr.label is not null or w.id is not null)"], []
    if models:
        where.append(f"coalesce(t.model, c.model) in ({', '.join('?' for _ in models)})")
        args += models
    if openers_only:
        where.append("c.opener_id is not null")
    return list(db.query(f"""
        select t.id as turn_id, t.conversation_id, t.position, t.content, t.created,
               coalesce(t.model, c.model) as model,
               c.opener_id, cr.id as rating_id, cr.label, cr.rater, cr.created as rated,
               w.id as rewrite_id, w.content as rewrite, w.rater as rewriter, w.created as rewritten
        from turns t join conversations c on c.id = t.conversation_id
        left join current_ratings cr on cr.turn_id = t.id and cr.label is not null
        left join rewrites w on w.id = (select max(id) from rewrites where turn_id = t.id)
        where {' and '.join(where)} order by c.created, t.conversation_id, t.position""", args))


def conversation_rewrites(db: Database, conversation_id: str) -> list[dict]:
    """Every rewrite of the conversation's turns, oldest first (``turn_id``, ``content``, ``created``)."""
    return list(db.query("""select w.turn_id, w.content, w.created from rewrites w join turns t on t.id = w.turn_id
                            where t.conversation_id = ? order by w.id""", [conversation_id]))


def rewrites_of_user_turns(db: Database) -> list[dict]:
    """Rewrites attached to a user turn (written before the log refused them): never training data."""
    return list(db.query("""select w.id, w.turn_id from rewrites w
                            join turns t on t.id = w.turn_id where t.role = 'user' order by w.id"""))


def ratings_by_rater(db: Database) -> list[dict]:
    """Every rater's latest label on each assistant turn (``turn_id``, ``rater``, ``label``, ``model``):
    people and judges alike (a judge's name starts with ``JUDGE``); a rating cleared later is left
    out, and so is a person who gave no name."""
    return list(db.query(f"""
        select r.turn_id, r.rater, r.label, t.model from ratings r join turns t on t.id = r.turn_id
        where r.rater is not null and t.role = 'assistant' and {SHOWN}
          and r.id = (select max(id) from ratings where turn_id = r.turn_id and rater = r.rater)
          and r.label is not null
        order by r.turn_id, r.rater"""))


def rating_counts(db: Database, openers_only: bool = False) -> list[dict]:
    """Per model and label: how many assistant turns carry that current rating."""
    opener = "and c.opener_id is not null" if openers_only else ""
    return list(db.query(f"""
        select t.model as model, cr.label as label, count(*) as n
        from turns t join current_ratings cr on cr.turn_id = t.id
        join conversations c on c.id = t.conversation_id
        where t.role = 'assistant' and {SHOWN} and cr.label is not null {opener}
        group by t.model, cr.label order by t.model"""))
