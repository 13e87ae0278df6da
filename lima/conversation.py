"""A conversation as the UI holds it, and the one routine that sends a turn and logs it.

Kept free of Gradio so it is tested directly: ``send`` writes the user turn before asking the
model, saves the assistant turn as soon as its first token arrives and again every half second
while it streams, so what was shown is what was saved even if the browser closes or the process
is killed. ``load`` rebuilds the chat (its turns: role, content, turn id, rating) from the log.
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
# A message sent while the service still loads its model waits for it (the page says so) this long.
WAIT_LOADING_S = float(os.environ.get("LIMA_WAIT_LOADING_S", "600"))


@dataclass
class Turn:
    """One message of a chat as shown, and the logged turn behind it."""

    role: str
    content: str  # a rewrite in place of the original reply: what the model sees next
    id: int | None = None
    rating: str | None = None
    status: str = "complete"  # the log's: streaming | complete | interrupted (cut short)

    @property
    def cut_short(self) -> bool:
        return self.role == "assistant" and self.status == "interrupted"


@dataclass
class Chat:
    """What one browser tab shows: the log's conversation id and its turns, in order."""

    conversation_id: str | None = None
    turns: list[Turn] = field(default_factory=list)
    waiting: str = ""  # while the service still loads the model: its sentence (shown, never logged)
    closed: bool = False  # another conversation took its place in the tab

    @property
    def untouched(self) -> bool:
        """Nothing sent, loaded or put in its place yet: what a page that has just opened shows."""
        return self.conversation_id is None and not self.turns and not self.closed

    @property
    def messages(self) -> list[dict]:
        """The turns as chatbot messages (role and content)."""
        return [{"role": t.role, "content": t.content} for t in self.turns]

    @property
    def turn_ids(self) -> list[int | None]:
        return [t.id for t in self.turns]

    @property
    def ratings(self) -> list[str | None]:
        """One per assistant turn, in order: a chatbot's ``feedback_value``."""
        return [t.rating for t in self.turns if t.role == "assistant"]


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
        assistant = turn["role"] == "assistant"
        chat.turns.append(Turn(turn["role"], turn["rewrite"] if assistant and turn["rewrite"] else turn["content"],
                               turn["id"], turn["rating"] if assistant else None,
                               # a person's rewrite makes a cut-short reply whole
                               "complete" if assistant and turn["rewrite"] else turn["status"] or "complete"))
    return chat


def openai_messages(chat: Chat) -> list[dict[str, str]]:
    """What the model sees: the conversation as logged, rewrites in place of the original replies."""
    return chat.messages


def send(client: ServiceClient, chat: Chat, text: str, model: str, rater: str | None = None,
         opener_id: str | None = None, source: str = "chat", **params) -> Iterator[Chat]:
    """Log the user turn, stream the reply into the chat and the log; yields after each piece."""
    text = check_message(text)
    db = connect()
    if chat.conversation_id is None:
        chat.conversation_id = chatlog.new_conversation(db, model, rater, opener_id, source=source, title=text)
    chat.turns.append(Turn("user", text, chatlog.add_turn(db, chat.conversation_id, "user", text, model=model)))
    yield chat
    yield from reply(client, chat, model, **params)


def reply(client: ServiceClient, chat: Chat, model: str, **params) -> Iterator[Chat]:
    """Answer the last user turn (also used to retry after a failure). A reply that was cut short
    (a failure mid-stream, a killed process) is answered anew: the new reply takes its place once
    it starts, and the log keeps the cut-short one, marked ``replaced``."""
    db = connect()
    replacing = chat.turns[-1] if chat.turns and chat.turns[-1].cut_short else None
    request = openai_messages(chat)[:-1] if replacing else openai_messages(chat)
    turn_id, text, saved_at = None, "", 0.0
    try:
        for event in client.stream(model, request, wait_loading=WAIT_LOADING_S, **params):
            chat.waiting = event.waiting
            if event.waiting:
                yield chat
                continue
            if event.done:
                if turn_id is None:  # an empty reply is still a turn
                    turn_id = _start_turn(db, chat, model, params, "", replacing)
                chat.turns[-1].status = "complete"
                chatlog.update_turn(db, turn_id, content=text, status="complete", finish_reason=event.finish_reason,
                                    prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens,
                                    first_token_ms=event.first_token_ms, latency_ms=event.latency_ms)
                yield chat
                return
            text += event.text
            if turn_id is None:
                turn_id = _start_turn(db, chat, model, params, text, replacing)
            chat.turns[-1].content = text
            if time.monotonic() - saved_at > SAVE_EVERY_S:
                chatlog.update_turn(db, turn_id, content=text)
                saved_at = time.monotonic()
            yield chat
    except (ServiceProblem, GeneratorExit):  # a failure, or the browser went away mid-stream
        if turn_id is not None:  # keep what was shown, marked as cut short
            chat.turns[-1].status = "interrupted"
            chatlog.update_turn(db, turn_id, content=text, status="interrupted")
        raise
    finally:
        chat.waiting = ""


def _start_turn(db, chat: Chat, model: str, params: dict, text: str, replacing: Turn | None) -> int:
    if replacing is not None:
        chatlog.update_turn(db, replacing.id, status=chatlog.REPLACED)
        chat.turns.remove(replacing)
    turn_id = chatlog.add_turn(db, chat.conversation_id, "assistant", text, model=model, params=params,
                               status="streaming")
    chat.turns.append(Turn("assistant", text, turn_id, status="streaming"))
    return turn_id


def needs_reply(chat: Chat) -> bool:
    """The last turn is a user turn without a reply, or a reply that was cut short."""
    return bool(chat.turns) and (chat.turns[-1].role == "user" or chat.turns[-1].cut_short)
