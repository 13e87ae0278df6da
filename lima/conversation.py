"""A conversation as the UI holds it, and the one routine that sends a turn and logs it.

Kept free of Gradio so it is tested directly: ``send`` writes the user turn before asking the
model, saves the assistant turn as soon as its first token arrives and again every half second
while it streams, so what was shown is what was saved even if the browser closes or the process
is killed. ``load`` rebuilds the chat (messages, turn ids, ratings) from the log.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from lima.store import chatlog, connect
from lima.service_client import ServiceClient, ServiceProblem

MAX_MESSAGE_CHARS = int(os.environ.get("LIMA_MAX_MESSAGE_CHARS", "50000"))
SAVE_EVERY_S = 0.5


@dataclass
class Chat:
    """What one browser tab shows: the log's conversation id, chatbot messages and their turn ids."""

    conversation_id: str | None = None
    messages: list[dict] = field(default_factory=list)
    turn_ids: list[int | None] = field(default_factory=list)
    ratings: list[str | None] = field(default_factory=list)  # one per assistant message, for feedback_value


def check_message(text: str | None) -> str:
    text = (text or "").strip()
    if not text:
        raise ServiceProblem("refused", "Type a message first.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ServiceProblem("refused", f"That message is {len(text):,} characters long; the limit is "
                                        f"{MAX_MESSAGE_CHARS:,}. Nothing was sent or saved; your text is still in the box.")
    return text


def load(conversation_id: str | None) -> Chat:
    if not conversation_id:
        return Chat()
    found = chatlog.conversation(connect(), conversation_id)
    if found is None:
        return Chat()
    chat = Chat(conversation_id)
    for turn in found["turns"]:
        content = turn["rewrite"] if turn["role"] == "assistant" and turn["rewrite"] else turn["content"]
        chat.messages.append({"role": turn["role"], "content": content})
        chat.turn_ids.append(turn["id"])
        if turn["role"] == "assistant":
            chat.ratings.append(turn["rating"])
    return chat


def openai_messages(chat: Chat) -> list[dict[str, str]]:
    """What the model sees: the conversation as logged, rewrites in place of the original replies."""
    return [{"role": m["role"], "content": m["content"]} for m in chat.messages]


def send(client: ServiceClient, chat: Chat, text: str, model: str, rater: str | None = None,
         opener_id: str | None = None, source: str = "chat", **params) -> Iterator[Chat]:
    """Log the user turn, stream the reply into the chat and the log; yields after each piece."""
    text = check_message(text)
    db = connect()
    if chat.conversation_id is None:
        chat.conversation_id = chatlog.new_conversation(db, model, rater, opener_id, source=source, title=text)
    chat.turn_ids.append(chatlog.add_turn(db, chat.conversation_id, "user", text, model=model))
    chat.messages.append({"role": "user", "content": text})
    yield chat
    yield from reply(client, chat, model, **params)


def reply(client: ServiceClient, chat: Chat, model: str, **params) -> Iterator[Chat]:
    """Answer the last user turn (also used to retry after a failure)."""
    db = connect()
    request = openai_messages(chat)
    turn_id, text, saved_at = None, "", 0.0
    try:
        for event in client.stream(model, request, **params):
            if event.done:
                if turn_id is None:  # an empty reply is still a turn
                    turn_id = _start_turn(db, chat, model, params, "")
                chatlog.update_turn(db, turn_id, content=text, status="complete", finish_reason=event.finish_reason,
                                    prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens,
                                    first_token_ms=event.first_token_ms, latency_ms=event.latency_ms)
                yield chat
                return
            text += event.text
            if turn_id is None:
                turn_id = _start_turn(db, chat, model, params, text)
            chat.messages[-1]["content"] = text
            if time.monotonic() - saved_at > SAVE_EVERY_S:
                chatlog.update_turn(db, turn_id, content=text)
                saved_at = time.monotonic()
            yield chat
    except ServiceProblem:
        if turn_id is not None:  # keep what was shown, marked as cut short
            chatlog.update_turn(db, turn_id, content=text, status="interrupted")
        raise
    except GeneratorExit:  # the browser went away mid-stream
        if turn_id is not None:
            chatlog.update_turn(db, turn_id, content=text, status="interrupted")
        raise


def _start_turn(db, chat: Chat, model: str, params: dict, text: str) -> int:
    turn_id = chatlog.add_turn(db, chat.conversation_id, "assistant", text, model=model, params=params,
                               status="streaming")
    chat.messages.append({"role": "assistant", "content": text})
    chat.turn_ids.append(turn_id)
    chat.ratings.append(None)
    return turn_id


def needs_reply(chat: Chat) -> bool:
    return bool(chat.messages) and chat.messages[-1]["role"] == "user"
