"""A chat log with rated replies, as people leave it in the workbench (made-up text)."""

from __future__ import annotations

from lima.store import chatlog


def conversation(db, model: str, exchanges: list[tuple[str, str]], opener_id: str | None = None) -> list[int]:
    """A conversation of (user, reply) exchanges; the reply turns' ids."""
    cid = chatlog.new_conversation(db, model, opener_id=opener_id, title=exchanges[0][0])
    replies = []
    for user, reply in exchanges:
        chatlog.add_turn(db, cid, "user", user)
        replies.append(chatlog.add_turn(db, cid, "assistant", reply, model=model))
    return replies


def rated_log(db) -> dict[str, list[int]]:
    """Two raters, two models, every label, one rewrite, a judge's rating, a changed mind."""
    a = conversation(db, "lima-dialogue", [("how do i boil an egg?", "put it in boiling water for nine minutes."),
                                           ("and then?", "the fox the fox the fox"),
                                           ("thanks, what next?", "cool it in cold water, then peel it.")],
                     opener_id="opener-01")
    b = conversation(db, "lima-zero-shot", [("explain a python list", "a list holds items in order."),
                                            ("show me one", "i do not know.")])
    chatlog.rate(db, a[0], "Excellent", "alice")
    chatlog.rate(db, a[1], "Pass", "alice")
    chatlog.rate(db, a[1], "Fail", "alice")  # changed her mind: the current rating counts
    chatlog.rewrite(db, a[1], "peel it under running water.", "alice")
    chatlog.rate(db, a[2], "Pass", "bob")
    chatlog.rate(db, b[0], "Pass", "bob")
    chatlog.rate(db, b[1], "Fail", "bob")
    chatlog.judge_rate(db, b[0], "Fail", "judge-model", "key")  # a judge never counts
    return {"a": a, "b": b}
