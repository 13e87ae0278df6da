"""Build comparison sessions with known ratings and verdicts directly in the log."""

from __future__ import annotations

import uuid

from lima.store import chatlog, utcnow


def conversation(db, model: str, exchanges: list[tuple[str, str, str | None]], opener: str | None = "opener-01",
                 source: str = "compare") -> str:
    """``exchanges``: (user text, reply text, rating or None)."""
    conv = chatlog.new_conversation(db, model, "rater", opener, source=source)
    for user, reply, rating in exchanges:
        chatlog.add_turn(db, conv, "user", user, model=model)
        turn = chatlog.add_turn(db, conv, "assistant", reply, model=model)
        if rating:
            chatlog.rate(db, turn, rating, "rater")
    return conv


def comparison(db, left: str, right: str, left_conv: str, right_conv: str, verdict: str | None) -> str:
    cid = uuid.uuid4().hex[:16]
    db["comparisons"].insert({"id": cid, "created": utcnow(), "opener_id": "opener-01", "left_model": left,
                              "right_model": right, "left_conversation": left_conv,
                              "right_conversation": right_conv, "verdict": verdict, "kind": "live"})
    return cid
