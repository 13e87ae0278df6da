"""Comparisons: linked conversations, blind sides, verdicts stored in model terms, and replays."""

import pytest

from evaluation import comparisons
from evaluation.comparisons import ComparisonError
from lima import conversation as conv
from lima.service_client import ServiceClient
from lima.store import chatlog, connect


def test_a_session_links_two_conversations(lima_home):
    session = comparisons.start("lima-zero-shot", "lima-dialogue", False, "opener-04", "ana")
    row = connect()["comparisons"].get(session.comparison_id)
    assert (row["left_model"], row["right_model"], row["blind"], row["swapped"]) == \
        ("lima-zero-shot", "lima-dialogue", 0, 0)
    left = chatlog.conversation(connect(), row["left_conversation"])
    assert (left["model"], left["source"], left["opener_id"], left["rater"]) == \
        ("lima-zero-shot", "compare", "opener-04", "ana")
    assert session.title(0) == "A: lima-zero-shot" and session.title(1) == "B: lima-dialogue"


def test_blind_sides_are_shuffled_named_a_b_and_the_verdict_names_the_model(lima_home, monkeypatch):
    monkeypatch.setattr(comparisons.random, "random", lambda: 0.1)  # the coin says: swap
    session = comparisons.start("lima-zero-shot", "lima-dialogue", True, None, None)
    assert session.order == ("right", "left") and connect()["comparisons"].get(session.comparison_id)["swapped"] == 1
    assert (session.title(0), session.title(1)) == ("A", "B")  # names hidden until the verdict
    comparisons.save_verdict(session, "first better", "ana")  # A, shown first, is the right model here
    assert connect()["comparisons"].get(session.comparison_id)["verdict"] == "right"
    assert session.title(0) == "A: lima-dialogue"  # revealed


@pytest.mark.parametrize("left, right, message", [("m", "m", "two different models"), ("", "m", "both models")])
def test_bad_pairs_are_refused(lima_home, left, right, message):
    with pytest.raises(ComparisonError, match=message):
        comparisons.start(left, right, False, None, None)


def test_a_verdict_needs_a_session_and_a_known_choice(lima_home):
    with pytest.raises(ComparisonError, match="Start a comparison first"):
        comparisons.save_verdict(comparisons.Session(), "tie", None)
    session = comparisons.start("a", "b", False, None, None)
    with pytest.raises(ComparisonError, match="Choose one of"):
        comparisons.save_verdict(session, "both great", None)


@pytest.fixture
def other_model(api, tiny_base):
    api.post("/admin/models", json={"name": "other", "path": str(tiny_base)})
    yield "other"
    api.delete("/admin/models/other")


def test_replay_reruns_every_user_turn_and_links_the_pair(api, other_model):
    client = ServiceClient("http://service", http_client=api)
    chat = conv.Chat()
    for text in ("hello", "explain why", "thanks"):
        for _ in conv.send(client, chat, text, "base", "ana", opener_id="opener-02", max_tokens=4):
            pass
    new_id, comparison_id = comparisons.replay(client, chat.conversation_id, other_model, max_tokens=4)
    db = connect()
    replayed = chatlog.conversation(db, new_id)
    assert replayed["source"] == "replay" and replayed["replay_of"] == chat.conversation_id
    assert replayed["model"] == "other" and replayed["opener_id"] == "opener-02"
    assert [t["content"] for t in replayed["turns"] if t["role"] == "user"] == ["hello", "explain why", "thanks"]
    assert all(t["model"] == "other" for t in replayed["turns"] if t["role"] == "assistant")
    row = db["comparisons"].get(comparison_id)
    assert (row["kind"], row["left_conversation"], row["right_conversation"]) == ("replay", chat.conversation_id,
                                                                                 new_id)


def test_replay_of_a_missing_conversation_is_refused(api):
    with pytest.raises(ComparisonError, match="there is no conversation 'nope'"):
        comparisons.replay(ServiceClient("http://service", http_client=api), "nope", "base")
