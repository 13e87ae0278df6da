"""The chat routine the workbench runs (lima.conversation), against the service in process: logging,
and every bad input."""

import pytest

from lima.store import chatlog, connect
from tests.helpers.server import free_port
from lima import conversation as conv
from lima.service_client import ServiceClient, ServiceProblem


@pytest.fixture
def client(api):
    return ServiceClient("http://service", http_client=api)


def test_a_turn_is_logged_as_it_streams(client):
    chat = conv.Chat()
    snapshots = [len(c.messages[-1]["content"]) for c in conv.send(client, chat, "hello", "base", "ana",
                                                                   temperature=0, max_tokens=20)]
    assert len(snapshots) > 2  # the user turn, then the reply piece by piece
    [user, assistant] = chatlog.turns(connect(), chat.conversation_id)
    assert (user["role"], user["content"]) == ("user", "hello")
    assert assistant["status"] == "complete" and assistant["content"] == chat.messages[-1]["content"]
    assert assistant["completion_tokens"] == 20 and assistant["prompt_tokens"] > 0
    assert assistant["latency_ms"] >= assistant["first_token_ms"] > 0
    assert '"max_tokens": 20' in assistant["params"]
    assert chat.turn_ids == [user["id"], assistant["id"]]
    conversation = chatlog.conversation(connect(), chat.conversation_id)
    assert conversation["model"] == "base" and conversation["rater"] == "ana" and conversation["title"] == "hello"


def test_reload_rebuilds_the_chat_with_ratings_and_rewrites(client):
    chat = conv.Chat()
    for _ in conv.send(client, chat, "hello", "base", max_tokens=5):
        pass
    for _ in conv.send(client, chat, "and then?", "base", max_tokens=5):
        pass
    db = connect()
    chatlog.rate(db, chat.turn_ids[1], "Excellent")
    chatlog.rewrite(db, chat.turn_ids[3], "A better second answer.")
    again = conv.load(chat.conversation_id)
    assert again.turn_ids == chat.turn_ids
    assert again.ratings == ["Excellent", None]
    assert again.messages[3]["content"] == "A better second answer."
    # the model sees the rewrite, not the original, from then on
    assert conv.openai_messages(again)[3]["content"] == "A better second answer."


@pytest.mark.parametrize("text, message", [("", "Type a message first"), ("   \n ", "Type a message first"),
                                           ("x" * 2_000_000, "2,000,000 characters long; the limit is 50,000")])
def test_empty_and_huge_messages_are_refused_and_nothing_is_saved(client, text, message):
    chat = conv.Chat()
    with pytest.raises(ServiceProblem, match=message):
        list(conv.send(client, chat, text, "base"))
    assert chat.conversation_id is None and chatlog.recent(connect()) == []


def test_a_vanished_model_keeps_the_user_turn(client):
    chat = conv.Chat()
    with pytest.raises(ServiceProblem) as problem:
        list(conv.send(client, chat, "still there?", "lima-gone"))
    assert problem.value.kind == "gone" and "Known models: base, short" in str(problem.value)
    [turn] = chatlog.turns(connect(), chat.conversation_id)
    assert turn["content"] == "still there?"  # nothing typed is lost
    assert conv.needs_reply(chat)
    for _ in conv.reply(client, chat, "base", max_tokens=3):  # Retry on a model that exists
        pass
    assert [t["role"] for t in chatlog.turns(connect(), chat.conversation_id)] == ["user", "assistant"]


def test_service_down_is_a_sentence_not_a_traceback():
    client = ServiceClient(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ServiceProblem, match="is not reachable. Is `lima serve` running?") as problem:
        client.models()
    assert problem.value.kind == "down"
    chat = conv.Chat()
    with pytest.raises(ServiceProblem, match="stopped answering"):
        list(conv.send(client, chat, "anyone?", "base"))
    assert chatlog.turns(connect(), chat.conversation_id)[0]["content"] == "anyone?"


def test_a_refused_request_is_explained(client):
    chat = conv.Chat()
    with pytest.raises(ServiceProblem, match="ask for at most"):
        list(conv.send(client, chat, "hi", "short", max_tokens=500))


def test_a_reply_cut_short_is_marked_and_a_retry_answers_it_anew(client):
    """A reply cut short (the browser gone, a failure mid-stream, a killed process marked at the
    next start) keeps its text, marked; Retry answers the same user turn anew in its place, and
    the log keeps the cut-short text apart."""
    chat = conv.Chat()
    stream = conv.send(client, chat, "tell me a long story", "base", temperature=0, max_tokens=40)
    for chat in stream:
        if chat.turns[-1].role == "assistant" and len(chat.turns[-1].content) > 5:
            break
    stream.close()  # as when the page goes away mid-stream
    partial = chat.turns[-1].content
    again = conv.load(chat.conversation_id)
    assert again.turns[-1].cut_short and again.turns[-1].content == partial
    assert conv.needs_reply(again)
    for again in conv.reply(client, again, "base", temperature=0, max_tokens=40):
        pass
    assert [t.role for t in again.turns] == ["user", "assistant"] and not again.turns[-1].cut_short
    assert not conv.needs_reply(again)
    shown = chatlog.turns(connect(), chat.conversation_id)
    assert [t["status"] for t in shown] == ["complete", "complete"] and len(shown[1]["content"]) > len(partial)
    kept = list(connect()["turns"].rows_where("status = ?", [chatlog.REPLACED]))
    assert [t["content"] for t in kept] == [partial]
    assert conv.load(chat.conversation_id).turn_ids == again.turn_ids  # a reload shows the new reply only

    # a reply left 'streaming' by a killed process is marked at the next start, and retried the same way
    db = connect()
    chatlog.update_turn(db, again.turn_ids[1], status="streaming")
    assert chatlog.mark_interrupted(db) == 1
    assert conv.needs_reply(conv.load(chat.conversation_id))
