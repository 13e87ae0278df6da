"""The Compare tab: two models side by side on the same messages, rated turn by turn, then a verdict.

As in the paper's section 6: a session starts from one of the 10 openers (or free text), every
user message goes to both models, both replies stream side by side and each is rated Fail /
Pass / Excellent, and at the end the rater says which conversation was better, or a tie. Blind
mode shuffles the sides and names them A and B until the verdict is saved. Both sides are logged
as conversations linked by a comparison. Replay fills the two sides from a saved conversation
and its re-run on another model.
"""

from __future__ import annotations

import queue
import random
import threading
import uuid
from dataclasses import dataclass, field

import gradio as gr

from dialogues import project
from evaluation import replay as replays
from lima.store import chatlog, connect, utcnow
from ui import conversation as conv
from ui.chat_tab import FOLLOW_UP_SLOTS, HELP, rater_of
from ui.service_client import ServiceClient, ServiceProblem

VERDICTS = ("first better", "second better", "tie")


@dataclass
class Session:
    """A comparison in progress; ``order`` is the display order of the sides (left first unless swapped)."""

    comparison_id: str | None = None
    models: dict[str, str] = field(default_factory=dict)  # side -> model
    chats: dict[str, conv.Chat] = field(default_factory=lambda: {"left": conv.Chat(), "right": conv.Chat()})
    order: tuple[str, str] = ("left", "right")
    blind: bool = False
    verdict: str | None = None

    def title(self, position: int) -> str:
        side = self.order[position]
        if self.blind and self.verdict is None:
            return "A" if position == 0 else "B"
        return f"{'A' if position == 0 else 'B'}: {self.models.get(side, side)}"


def start(left_model: str, right_model: str, blind: bool, opener_id: str | None, rater: str | None) -> Session:
    if not left_model or not right_model:
        raise ServiceProblem("refused", "Pick both models first.")
    if left_model == right_model:
        raise ServiceProblem("refused", "Pick two different models to compare.")
    db = connect()
    session = Session(uuid.uuid4().hex[:16], {"left": left_model, "right": right_model}, blind=blind)
    if blind and random.random() < 0.5:
        session.order = ("right", "left")
    for side, model in session.models.items():
        session.chats[side].conversation_id = chatlog.new_conversation(db, model, rater, opener_id, source="compare")
    db["comparisons"].insert({"id": session.comparison_id, "created": utcnow(), "opener_id": opener_id,
                              "left_model": left_model, "right_model": right_model, "blind": int(blind),
                              "swapped": int(session.order[0] == "right"), "kind": "live",
                              "left_conversation": session.chats["left"].conversation_id,
                              "right_conversation": session.chats["right"].conversation_id})
    return session


def send_both(client: ServiceClient, session: Session, text: str, rater: str | None, **params):
    """Send ``text`` to both sides at once; yields (session, problems) as either side streams."""
    text = conv.check_message(text)
    updates: queue.Queue = queue.Queue()

    def side(name: str):
        try:
            for _ in conv.send(client, session.chats[name], text, session.models[name], rater, **params):
                updates.put(("update", name, None))
        except ServiceProblem as problem:
            updates.put(("problem", name, str(problem)))
        finally:
            updates.put(("done", name, None))

    threads = [threading.Thread(target=side, args=(name,), daemon=True) for name in ("left", "right")]
    for thread in threads:
        thread.start()
    problems, finished = {}, 0
    while finished < 2:
        kind, name, detail = updates.get()
        if kind == "problem":
            problems[name] = detail
        finished += kind == "done"
        yield session, problems


def save_verdict(session: Session, choice: str, rater: str | None) -> Session:
    if session.comparison_id is None:
        raise ServiceProblem("refused", "Start a comparison first.")
    if choice not in VERDICTS:
        raise ServiceProblem("refused", f"Choose one of: {', '.join(VERDICTS)}.")
    verdict = "tie" if choice == "tie" else session.order[0 if choice == "first better" else 1]
    connect()["comparisons"].update(session.comparison_id, {"verdict": verdict, "verdict_rater": rater,
                                                           "verdict_time": utcnow()})
    session.verdict = verdict
    return session


def from_replay(client: ServiceClient, conversation_id: str, model: str, **params) -> Session:
    new_id, comparison_id = replays.replay(client, conversation_id, model, **params)
    row = connect()["comparisons"].get(comparison_id)
    session = Session(comparison_id, {"left": row["left_model"], "right": model})
    session.chats = {"left": conv.load(conversation_id), "right": conv.load(new_id)}
    return session


def build(client: ServiceClient) -> dict:
    openers = project.openers()
    opener_by_id = {o.id: o for o in openers}
    state = gr.State(Session())

    with gr.Row():
        left_model = gr.Dropdown(label="First model", choices=[], elem_id="compare-left")
        right_model = gr.Dropdown(label="Second model", choices=[], elem_id="compare-right")
        blind = gr.Checkbox(label="Blind (shuffle sides, hide names until the verdict)", value=False)
    with gr.Row():
        opener = gr.Dropdown(label="Opener", choices=[("Free text", "")] + [(f"{o.id} · {o.task}", o.id) for o in openers],
                             value="", elem_id="compare-opener")
        begin = gr.Button("Start comparison", variant="primary", elem_id="compare-start")
    gr.Markdown(HELP)
    with gr.Row():
        first = gr.Chatbot(label="A", feedback_options=list(chatlog.LABELS), height=420, elem_id="compare-a")
        second = gr.Chatbot(label="B", feedback_options=list(chatlog.LABELS), height=420, elem_id="compare-b")
    with gr.Row():
        follow_ups = [gr.Button(visible=False, size="sm") for _ in range(FOLLOW_UP_SLOTS)]
    with gr.Row():
        message = gr.Textbox(placeholder="Message for both", lines=2, scale=8, show_label=False,
                             elem_id="compare-message")
        send = gr.Button("Send to both", variant="primary", scale=1, elem_id="compare-send")
    with gr.Row():
        verdict = gr.Radio(label="Whole-conversation verdict", choices=list(VERDICTS), elem_id="compare-verdict")
        save = gr.Button("Save verdict", elem_id="compare-save")
    status = gr.Markdown(elem_id="compare-status")
    with gr.Accordion("Replay a saved conversation on another model", open=False):
        with gr.Row():
            saved = gr.Dropdown(label="Conversation", choices=[], elem_id="replay-conversation")
            replay_model = gr.Dropdown(label="Model", choices=[], elem_id="replay-model")
            replay_button = gr.Button("Replay")

    def view(session: Session, note: str = ""):
        a, b = (session.chats[side] for side in session.order)
        label = f"comparison `{session.comparison_id}`" if session.comparison_id else "no comparison yet"
        if session.verdict:
            label += f" · verdict saved: **{session.verdict}** ({session.models['left']} vs {session.models['right']})"
        return (gr.update(value=a.messages, feedback_value=a.ratings, label=session.title(0)),
                gr.update(value=b.messages, feedback_value=b.ratings, label=session.title(1)),
                session, f"{label}{' · ' + note if note else ''}")

    outputs = [first, second, state, status]

    def buttons(opener_id):
        texts = opener_by_id[opener_id].follow_ups if opener_id in opener_by_id else []
        return [gr.update(value=texts[i], visible=True) if i < len(texts) else gr.update(visible=False)
                for i in range(FOLLOW_UP_SLOTS)]

    def on_start(left, right, is_blind, opener_id, request: gr.Request):
        try:
            session = start(left, right, is_blind, opener_id or None, rater_of(None, request))
        except ServiceProblem as problem:
            gr.Warning(str(problem))
            return (gr.update(), *view(Session()), *buttons(None))
        text = opener_by_id[opener_id].message if opener_id in opener_by_id else ""
        return (text, *view(session, "send the first message"), *buttons(opener_id))

    begin.click(on_start, [left_model, right_model, blind, opener], [message, *outputs, *follow_ups])

    def on_send(text, session, request: gr.Request):
        if session.comparison_id is None:
            gr.Warning("Start a comparison first.")
            yield (text, *view(session))
            return
        try:
            for session, problems in send_both(client, session, text, rater_of(None, request)):
                note = "; ".join(f"{session.title(session.order.index(side))}: {p}" for side, p in problems.items())
                yield ("", *view(session, note))
            for side, problem in problems.items():
                gr.Warning(f"{session.title(session.order.index(side))}: {problem}")
        except ServiceProblem as problem:
            gr.Warning(str(problem))
            yield (text, *view(session))

    send.click(on_send, [message, state], [message, *outputs])
    message.submit(on_send, [message, state], [message, *outputs])
    for button in follow_ups:
        button.click(lambda text: text, button, message).then(on_send, [message, state], [message, *outputs])

    def rater(position: int):
        def on_rate(session: Session, data: gr.LikeData, request: gr.Request):
            chat = session.chats[session.order[position]]
            index = data.index if isinstance(data.index, int) else data.index[0]
            label = data.liked if isinstance(data.liked, str) and data.liked else None
            try:
                if not 0 <= index < len(chat.turn_ids):
                    raise chatlog.LogError(f"message {index} is not a saved turn")
                chatlog.rate(connect(), chat.turn_ids[index], label, rater_of(None, request))
            except chatlog.LogError as exc:
                gr.Warning(f"Rating not saved: {exc}")
                return session
            chat.ratings[sum(1 for m in chat.messages[: index + 1] if m["role"] == "assistant") - 1] = label
            return session
        return on_rate

    first.like(rater(0), state, state)
    second.like(rater(1), state, state)

    def on_verdict(session, choice, request: gr.Request):
        try:
            session = save_verdict(session, choice, rater_of(None, request))
        except ServiceProblem as problem:
            gr.Warning(str(problem))
        return view(session)

    save.click(on_verdict, [state, verdict], outputs)

    def on_replay(conversation_id, model):
        if not conversation_id or not model:
            gr.Warning("Pick a saved conversation and a model to replay it on.")
            return view(Session())
        try:
            session = from_replay(client, conversation_id, model)
        except (ServiceProblem, ValueError) as exc:
            gr.Warning(str(exc))
            return view(Session())
        return view(session, "replay done: rate both sides and give a verdict")

    replay_button.click(on_replay, [saved, replay_model], outputs)

    def saved_choices():
        rows = chatlog.recent(connect(), 30, source="chat")
        return gr.update(choices=[(f"{r['updated'][:16]} · {r['model']} · {r['title'][:50]}", r["id"]) for r in rows])

    saved.focus(saved_choices, None, saved)

    def models():
        try:
            names = client.models()
        except ServiceProblem as problem:
            gr.Warning(str(problem))
            return gr.update(), gr.update(), gr.update()
        left = "lima-zero-shot" if "lima-zero-shot" in names else (names[0] if names else None)
        right = "lima-dialogue" if "lima-dialogue" in names else (names[-1] if names else None)
        return (gr.update(choices=names, value=left), gr.update(choices=names, value=right),
                gr.update(choices=names, value=right))

    return {"load": (models, None, [left_model, right_model, replay_model])}
