"""Rated live conversations become chains only when every assistant turn passed or was rewritten."""

from dialogues.export import export_chains


def conv(id, *turns, opener=None):
    out = []
    for turn in turns:
        role, content, *rest = turn
        rating = rest[0] if rest else None
        rewrite = rest[1] if len(rest) > 1 else None
        out.append({"role": role, "content": content, "rating": rating, "rewrite": rewrite})
    return {"id": id, "model": "lima-zero-shot", "opener": opener, "turns": out}


def test_export_filter():
    conversations = [
        conv("all-good", ("user", "q1"), ("assistant", "a1", "Excellent"), ("user", "q2"), ("assistant", "a2", "Pass"),
             opener="opener-02"),
        conv("rewritten", ("user", "q1"), ("assistant", "bad", "Fail", "better"), ("user", "q2"),
             ("assistant", "a2", "Excellent")),
        conv("failed", ("user", "q1"), ("assistant", "a1", "Pass"), ("user", "q2"), ("assistant", "bad", "Fail")),
        conv("unrated", ("user", "q1"), ("assistant", "a1", "Pass"), ("user", "q2"), ("assistant", "a2")),
        conv("one-exchange", ("user", "q1"), ("assistant", "a1", "Excellent")),
        conv("trailing-user", ("user", "q1"), ("assistant", "a1", "Pass"), ("user", "q2"),
             ("assistant", "a2", "Pass"), ("user", "unanswered")),
    ]
    chains, skipped = export_chains(conversations)
    assert [c.id for c in chains] == ["live-all-good", "live-rewritten", "live-trailing-user"]
    assert [m.content for m in chains[1].messages] == ["q1", "better", "q2", "a2"]
    assert chains[1].tags == ["rewritten"] and chains[0].topic == "opener-02"
    assert chains[0].source == "live/lima-zero-shot" and chains[0].kind == "live"
    assert chains[2].messages[-1].content == "a2"
    reasons = {s.conversation: s.reason for s in skipped}
    assert reasons == {
        "failed": "assistant turn 3 is rated Fail and was not rewritten",
        "unrated": "assistant turn 3 is not rated",
        "one-exchange": "messages: a dialogue chain needs at least 2 user turns, found 1",
    }


def test_exported_chains_load_back_as_a_chains_file(tmp_path):
    from dialogues import jsonl
    from dialogues.schema import Chain

    chains, _ = export_chains([conv("x", ("user", "q1"), ("assistant", "a1", "Pass"), ("user", "q2"),
                                    ("assistant", "a2", "Excellent"))])
    path = jsonl.write(tmp_path / "live.jsonl", chains)
    assert jsonl.load(path, Chain) == chains
