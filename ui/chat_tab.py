"""The Chat tab: pick a model, chat (streaming), rate every reply, rewrite what should be better.

Ratings use the chatbot's own feedback control with the paper's three labels, shown as three
buttons under each reply (``ui.app.CSS``); a click is written at once, and a later click is kept
as history. Enter sends, Shift+Enter starts a new line. Editing a reply
(the pencil) records a rewrite beside the original. The open conversation's id lives in the
browser (``gr.BrowserState``), so a reload brings the same conversation back from the log.
"""

from __future__ import annotations

import gradio as gr

from dialogues import project
from lima import conversation as conv, paper
from lima.paper import DECODING
from lima.service_client import ServiceClient, ServiceProblem
from lima.store import chatlog, connect
from ui import pickers, rating
from ui.rating import rater_of

FOLLOW_UP_SLOTS = 4
HELP = ("**Rate every reply** with one click under it (hover a label for its definition). "
        + " · ".join(f"**{label}**: {definition}" for label, definition in paper.DEFINITIONS.items())
        + ". Click the pencil on a reply to **rewrite** it into what it should have been; the original is kept.")


def text_of(content) -> str:
    """Gradio hands message content back as a list of parts; the log wants the text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    if isinstance(content, dict):
        return content.get("text", "")
    return str(content or "")


def in_place_of(old: conv.Chat, new: conv.Chat) -> conv.Chat:
    """``new`` to show in the tab instead of ``old``; a page-load restore still on its way sees that
    ``old`` was put aside and leaves the tab alone."""
    old.closed = True
    return new


def build(client: ServiceClient, browser: gr.BrowserState) -> dict:
    openers = project.openers()
    opener_by_id = {o.id: o for o in openers}
    chat_state = gr.State(conv.Chat())
    opener_state = gr.State(None)

    with gr.Row():
        model = gr.Dropdown(label="Model", choices=[], interactive=True, scale=3, elem_id="chat-model")
        refresh = gr.Button("Refresh models", scale=1)
        rater = gr.Textbox(label="Rater", placeholder="your name", scale=2, elem_id="rater")
        new = gr.Button("New conversation", scale=1, elem_id="new-conversation")
    with gr.Row():
        opener = gr.Dropdown(label="Start from an evaluation opener",
                             choices=[("Free text", "")] + [(f"{o.id} · {o.task}: {o.message[:70]}", o.id)
                                                             for o in openers],
                             value="", scale=3, elem_id="opener")
        reopen = gr.Dropdown(label="Reopen a conversation", choices=[], scale=3, elem_id="reopen")
    gr.Markdown(HELP)
    chatbot = gr.Chatbot(feedback_options=list(paper.LABELS), editable="all", height=480, buttons=["copy"],
                         elem_id="chatbot", label="Conversation")
    with gr.Row():
        follow_ups = [gr.Button(visible=False, size="sm", elem_classes=["follow-up"]) for _ in range(FOLLOW_UP_SLOTS)]
    with gr.Row():
        # lines=1: Gradio sends on Enter only for a one-line box (it grows to max_lines as text wraps)
        message = gr.Textbox(placeholder="Message (Enter sends, Shift+Enter for a new line)", lines=1,
                             max_lines=12, scale=8, show_label=False, elem_id="message")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
        retry = gr.Button("Retry reply", scale=1)
    status = gr.Markdown(elem_id="chat-status")
    with gr.Accordion("Sampling (the paper's decoding by default)", open=False):
        temperature = gr.Slider(0, 2, value=DECODING["temperature"], step=0.05, label="temperature")
        top_p = gr.Slider(0.05, 1, value=DECODING["top_p"], step=0.05, label="top-p")
        penalty = gr.Slider(1, 2, value=DECODING["repetition_penalty"], step=0.05, label="repetition penalty")
        max_tokens = gr.Slider(0, DECODING["max_tokens"], value=0, step=16,
                               label="max new tokens (0: as many as the context allows, at most 2,048)")
    sampling = [temperature, top_p, penalty, max_tokens]

    def shown(chat: conv.Chat, note: str = ""):
        label = f"conversation `{chat.conversation_id}`" if chat.conversation_id else "new conversation"
        if chat.waiting:
            note = pickers.waiting_note(chat.waiting)
        return (gr.update(value=rating.shown_messages(chat.turns), feedback_value=chat.ratings), chat,
                {"conversation": chat.conversation_id}, f"{label}{' · ' + note if note else ''}")

    chat_outputs = [chatbot, chat_state, browser, status]

    def params(t, p, r, n):
        return {"temperature": t, "top_p": p, "repetition_penalty": r, "max_tokens": int(n) or None}

    def on_send(text, chat, model_name, rater_name, opener_id, t, p, r, n, request: gr.Request):
        try:
            text = conv.check_message(text)
            yield "", rating.shown_sending(chat.turns, text), gr.skip(), gr.skip(), "sending…", gr.skip()
            # A message sent before the page has filled the model list goes to the model the list
            # will show first, and the list shows it: a newcomer's first Enter is never refused.
            picked, chosen = pickers.pick(client, model_name)
            for chat in conv.send(client, chat, text, picked, rater_of(rater_name, request), opener_id or None,
                                  **params(t, p, r, n)):
                yield "", *shown(chat), chosen
                chosen = gr.skip()
            if not model_name:  # the list as it is now that the model has answered
                yield "", *shown(chat), pickers.model_choices(client, picked)
        except ServiceProblem as problem:
            gr.Warning(str(problem))
            keep = text if not chat.turns or chat.turns[-1].role != "user" else ""
            note = "the reply failed; press Retry reply" if conv.needs_reply(chat) else f"⚠ not sent: {problem}"
            yield keep, *shown(chat, note), gr.skip()

    def on_retry(chat, model_name, t, p, r, n):
        if not conv.needs_reply(chat):
            gr.Info("The last turn already has a reply; send a new message instead.")
            yield *shown(chat), gr.skip()
            return
        try:
            picked, chosen = pickers.pick(client, model_name)
            for chat in conv.reply(client, chat, picked, **params(t, p, r, n)):
                yield *shown(chat), chosen
                chosen = gr.skip()
        except ServiceProblem as problem:
            gr.Warning(str(problem))
            yield *shown(chat, "the reply failed; press Retry reply"), gr.skip()

    send_inputs = [message, chat_state, model, rater, opener_state, *sampling]
    send_outputs = [message, *chat_outputs, model]
    send.click(on_send, send_inputs, send_outputs)
    message.submit(on_send, send_inputs, send_outputs)
    retry.click(on_retry, [chat_state, model, *sampling], [*chat_outputs, model])

    def on_rate(chat, rater_name, data: gr.LikeData, request: gr.Request):
        return rating.rate(chat, data, rater_of(rater_name, request))

    rating.on_click(chatbot, on_rate, [chat_state, rater], [chat_state, status])

    def on_edit(chat, rater_name, data: gr.EditData, request: gr.Request):
        index = rating.message_index(data)
        new_text = rating.edited_text(text_of(data.value))
        if not (0 <= index < len(chat.turns)):
            return shown(chat)
        turn = chat.turns[index]
        if turn.role != "assistant":
            gr.Warning("User turns stay as they were sent; start a new conversation to ask differently.")
            return shown(chat)
        try:
            chatlog.rewrite(connect(), turn.id, new_text, rater_of(rater_name, request))
        except chatlog.LogError as exc:
            gr.Warning(f"Rewrite not saved: {exc}")
            return shown(chat)
        turn.content, turn.status = new_text, "complete"  # a person's rewrite makes a cut-short reply whole
        return shown(chat, f"turn {index} rewritten · original kept")

    rating.on_rewrite(chatbot, on_edit, [chat_state, rater], chat_outputs)

    def follow_up_buttons(opener_id):
        found = opener_by_id.get(opener_id)
        texts = found.follow_ups if found else []
        return [gr.update(value=texts[i], visible=True) if i < len(texts) else gr.update(visible=False)
                for i in range(FOLLOW_UP_SLOTS)]

    def on_opener(opener_id, chat):
        found = opener_by_id.get(opener_id)
        return (found.message if found else "", opener_id or None, *shown(in_place_of(chat, conv.Chat())),
                *follow_up_buttons(opener_id))

    opener.input(on_opener, [opener, chat_state], [message, opener_state, *chat_outputs, *follow_ups])

    for button in follow_ups:
        button.click(lambda text: text, button, message).then(on_send, send_inputs, send_outputs)

    def on_new(chat):
        return ("", None, "", *shown(in_place_of(chat, conv.Chat())), *follow_up_buttons(None))

    new.click(on_new, chat_state, [message, opener_state, opener, *chat_outputs, *follow_ups])

    def model_choices(current):
        return pickers.model_choices(client, current)

    refresh.click(model_choices, model, model)
    model.focus(model_choices, model, model)  # a model trained meanwhile appears when the list opens

    def on_reopen(conversation_id, current_model, shown_now):
        """The conversation, and its model picked to go on with it."""
        chat = in_place_of(shown_now, conv.load(conversation_id))
        found = chatlog.conversation(connect(), conversation_id) if conversation_id else None
        opener_id = found["opener_id"] if found else None
        return (opener_id, *shown(chat), *follow_up_buttons(opener_id),
                model_choices(found["model"] if found else current_model))

    reopen.focus(pickers.saved_conversations, None, reopen)
    reopen.input(on_reopen, [reopen, model, chat_state], [opener_state, *chat_outputs, *follow_ups, model])

    def restore(saved, current_model, shown_now):
        """Page load: the models the service has, and the conversation this browser had open. Page-load
        events run beside the person's first clicks: what they sent, reopened or started before this
        answer is back stays on screen (and the model they went on with)."""
        saved = saved or {}
        chat = conv.load(saved.get("conversation"))
        found = chatlog.conversation(connect(), chat.conversation_id) if chat.conversation_id else None
        models = model_choices(found["model"] if found else current_model)
        if not shown_now.untouched:  # asked last: the person may have acted while the service answered
            return (gr.skip(),) * (2 + len(chat_outputs) + len(follow_ups))
        opener_id = found["opener_id"] if found else None
        return (models, opener_id, *shown(chat), *follow_up_buttons(opener_id))

    return {"model": model, "restore": (restore, [browser, model, chat_state],
                                        [model, opener_state, *chat_outputs, *follow_ups]),
            "refresh_models": (model_choices, model, model)}
