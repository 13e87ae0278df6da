"""The chat log store: migrations from empty, the schema, rate/re-rate/rewrite, concurrent writers."""

import sqlite3
import threading

import pytest

from lima.store import chatlog, connect
from lima.store.migrations import migrations


def test_migrations_from_empty_give_the_expected_schema(lima_home):
    db = connect()
    assert [m.name for m in migrations.applied(db)] == [m.name for m in migrations._migrations]
    assert db.journal_mode == "wal"
    tables = set(db.table_names())
    assert {"models", "runs", "run_progress", "dev_generations", "conversations", "turns", "ratings",
            "rewrites"} <= tables
    assert "current_ratings" in db.view_names()
    assert set(db["turns"].columns_dict) >= {"conversation_id", "position", "role", "content", "model", "params",
                                             "prompt_tokens", "completion_tokens", "latency_ms", "first_token_ms",
                                             "status", "created"}
    assert set(db["conversations"].columns_dict) >= {"id", "model", "opener_id", "rater", "source", "replay_of"}
    assert [fk.other_table for fk in db["ratings"].foreign_keys] == ["turns"]
    connect()  # opening again applies nothing twice
    assert len(migrations.applied(connect())) == len(migrations._migrations)


def test_turns_ratings_history_and_rewrites(lima_home):
    db = connect()
    conv = chatlog.new_conversation(db, "lima-dialogue", rater="ana", opener_id="opener-02", title="Why blue?")
    user = chatlog.add_turn(db, conv, "user", "Why is the sky blue?", model="lima-dialogue")
    reply = chatlog.add_turn(db, conv, "assistant", "Rayleigh scattering.", model="lima-dialogue",
                             params={"temperature": 0.7}, prompt_tokens=12, completion_tokens=4, latency_ms=120.5)
    assert chatlog.rate(db, reply, "Pass", "ana")
    assert not chatlog.rate(db, reply, "Pass", "ana")  # the same label again is not a change
    assert chatlog.rate(db, reply, "Excellent", "ben")
    chatlog.rewrite(db, reply, "Sunlight scatters off air molecules; blue scatters most.", "ana")
    [_, assistant] = chatlog.turns(db, conv)
    assert assistant["position"] == 1 and assistant["rating"] == "Excellent"
    assert assistant["content"] == "Rayleigh scattering."  # the original stays
    assert assistant["rewrite"].startswith("Sunlight scatters")
    assert [(r["label"], r["rater"]) for r in chatlog.rating_history(db, reply)] == [("Pass", "ana"),
                                                                                      ("Excellent", "ben")]
    chatlog.rate(db, reply, None, "ben")  # cleared, and the clearing is history too
    assert chatlog.turns(db, conv)[1]["rating"] is None and len(chatlog.rating_history(db, reply)) == 3
    with pytest.raises(chatlog.LogError, match="only assistant turns are rated"):
        chatlog.rate(db, user, "Pass")


@pytest.mark.parametrize("turn, label, message", [
    (999_999, "Pass", "there is no turn 999999"),
    ("12", "Pass", "turn id must be an integer"),
    (None, "Pass", "turn id must be an integer"),
])
def test_rating_a_missing_turn_is_refused(lima_home, turn, label, message):
    with pytest.raises(chatlog.LogError, match=message):
        chatlog.rate(connect(), turn, label)


def test_bad_label_is_refused(lima_home):
    db = connect()
    conv = chatlog.new_conversation(db, "m")
    chatlog.add_turn(db, conv, "user", "q")
    reply = chatlog.add_turn(db, conv, "assistant", "a")
    with pytest.raises(chatlog.LogError, match="one of Fail, Pass, Excellent, got 'Great'"):
        chatlog.rate(db, reply, "Great")
    assert chatlog.rating_history(db, reply) == []


def test_concurrent_writers_lose_nothing(lima_home):
    db = connect()
    conv = chatlog.new_conversation(db, "m")
    errors = []

    def writer(worker):
        try:
            mine = connect()  # one connection per thread, as the UI does
            for i in range(25):
                turn = chatlog.add_turn(mine, conv, "assistant", f"{worker}-{i}")
                chatlog.rate(mine, turn, "Pass", f"w{worker}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    rows = chatlog.turns(db, conv)
    assert len(rows) == 150
    assert [r["position"] for r in rows] == list(range(150))  # no gap, no duplicate
    assert db["ratings"].count == 150


def test_a_second_process_sees_committed_writes(lima_home):
    db = connect()
    conv = chatlog.new_conversation(db, "m")
    chatlog.add_turn(db, conv, "user", "saved at once")
    raw = sqlite3.connect(lima_home / "lima.db")
    assert raw.execute("select content from turns").fetchall() == [("saved at once",)]


def test_interrupted_streams_are_marked(lima_home):
    db = connect()
    conv = chatlog.new_conversation(db, "m")
    chatlog.add_turn(db, conv, "user", "q")
    turn = chatlog.add_turn(db, conv, "assistant", "half an ans", status="streaming")
    assert chatlog.mark_interrupted(db) == 1
    row = db["turns"].get(turn)
    assert row["status"] == "interrupted" and row["content"] == "half an ans"


def test_the_same_click_twice_at_once_is_one_rating(lima_home):
    db = connect()
    conv = chatlog.new_conversation(db, "m")
    chatlog.add_turn(db, conv, "user", "q")
    turn = chatlog.add_turn(db, conv, "assistant", "a")
    barrier = threading.Barrier(8)

    def click():
        mine = connect()
        barrier.wait()
        chatlog.rate(mine, turn, "Excellent", "ana")

    threads = [threading.Thread(target=click) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert [r["label"] for r in chatlog.rating_history(db, turn)] == ["Excellent"]
