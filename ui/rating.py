"""One rating handler, and one way to show messages, for every chatbot that shows a logged
conversation: the Chat tab and both sides of the Compare tab. A click is written to the log at once; a changed rating is kept as
history (``lima.store.chatlog.rate``)."""

from __future__ import annotations

import gradio as gr

from lima import conversation as conv
from lima.store import chatlog, connect


EMPTY_REPLY = "*(empty reply: the model ended its turn at once)*"
CUT_SHORT = "*(cut short: the reply was interrupted; press Retry reply for a new one)*"


def shown_messages(turns: list[conv.Turn]) -> list[dict]:
    """The turns as a chatbot shows them: a blank reply gets a visible line, so a person can see
    it, hover it and rewrite it with the pencil (an empty bubble has no size to hover), and a reply
    that was cut short says so under its text."""
    def content(turn: conv.Turn) -> str:
        if turn.role != "assistant":
            return turn.content
        text = turn.content if turn.content.strip() else EMPTY_REPLY
        return f"{text}\n\n{CUT_SHORT}" if turn.cut_short else text

    return [{"role": t.role, "content": content(t)} for t in turns]


def shown_sending(turns: list[conv.Turn], text: str) -> list[dict]:
    """The turns and a message that is on its way: shown the moment it is sent, before it is
    logged or any model is asked (a service that is still loading answers slowly)."""
    return [*shown_messages(turns), {"role": "user", "content": text}]


def edited_text(shown: str) -> str:
    """A reply's text as edited in the chatbot, without the lines ``shown_messages`` added."""
    text = shown.removesuffix(CUT_SHORT).rstrip()
    return "" if text == EMPTY_REPLY else text


def rater_of(name: str | None, request: gr.Request | None) -> str | None:
    """The rater: the name typed in the page, else the login name, else nobody."""
    return (name or "").strip() or (getattr(request, "username", None) if request else None) or None


def message_index(data: gr.LikeData | gr.EditData) -> int:
    return data.index if isinstance(data.index, int) else data.index[0]


def on_click(chatbot: gr.Chatbot, fn, inputs, outputs) -> None:
    """Wire ``fn`` to the label buttons under ``chatbot``'s replies so that every click reaches the
    log, in the order it was made. Gradio's default for an event drops a click made while the
    previous one is still on its way (a change of mind on a busy server was shown on screen and
    lost); one queue slot for all ratings keeps them in order (the app's default lets 16 run at
    once), and ``chatlog.rate`` ignores the second copy the chatbot sends of each click."""
    chatbot.like(fn, inputs, outputs, trigger_mode="multiple", concurrency_limit=1, concurrency_id="rating")


def on_rewrite(chatbot: gr.Chatbot, fn, inputs, outputs) -> None:
    """As ``on_click``, for rewrites (the pencil): a rewrite saved while another rewrite or a rating
    is still on its way reaches the log, after it."""
    chatbot.edit(fn, inputs, outputs, trigger_mode="multiple", concurrency_limit=1, concurrency_id="rating")


def rate(chat: conv.Chat, data: gr.LikeData, rater: str | None) -> tuple[conv.Chat, str]:
    """Record the label clicked under message ``data.index`` (none: the rating was cleared);
    returns the chat with its ratings updated and a sentence for the status line."""
    index = message_index(data)
    label = data.liked if isinstance(data.liked, str) and data.liked else None
    turn = chat.turns[index] if 0 <= index < len(chat.turns) else None
    try:
        if turn is None or turn.id is None:
            raise chatlog.LogError(f"message {index} of this chat is not a saved turn")
        chatlog.rate(connect(), turn.id, label, rater)
    except chatlog.LogError as exc:
        gr.Warning(f"Rating not saved: {exc}")
        return chat, "rating not saved"
    turn.rating = label
    return chat, f"turn {index} rated **{label or 'unrated'}** · saved"
