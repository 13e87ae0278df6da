"""Replay: a saved conversation's user turns re-run on another model, linked for comparison."""

import httpx
import pytest

from evaluation import replay as replays
from lima.store import chatlog, connect
from ui import conversation as conv
from ui.service_client import ServiceClient


@pytest.fixture
def other_model(service, tiny_base):
    httpx.post(service + "/admin/models", json={"name": "other", "path": str(tiny_base)}, timeout=60)
    yield "other"
    httpx.delete(service + "/admin/models/other")


def test_replay_reruns_every_user_turn_and_links_the_pair(service, other_model):
    client = ServiceClient(service)
    chat = conv.Chat()
    for text in ("hello", "explain why", "thanks"):
        for _ in conv.send(client, chat, text, "base", "ana", opener_id="opener-02", max_tokens=4):
            pass
    new_id, comparison_id = replays.replay(client, chat.conversation_id, other_model, max_tokens=4)
    db = connect()
    replayed = chatlog.conversation(db, new_id)
    assert replayed["source"] == "replay" and replayed["replay_of"] == chat.conversation_id
    assert replayed["model"] == "other" and replayed["opener_id"] == "opener-02"
    assert [t["content"] for t in replayed["turns"] if t["role"] == "user"] == ["hello", "explain why", "thanks"]
    assert all(t["model"] == "other" for t in replayed["turns"] if t["role"] == "assistant")
    row = db["comparisons"].get(comparison_id)
    assert (row["kind"], row["left_conversation"], row["right_conversation"]) == ("replay", chat.conversation_id,
                                                                                 new_id)


def test_replay_of_a_missing_conversation_is_refused(service):
    with pytest.raises(ValueError, match="there is no conversation 'nope'"):
        replays.replay(ServiceClient(service), "nope", "base")
