"""The Compare tab: two models side by side on the same messages, rated turn by turn, then a verdict.

The comparison itself (linked conversations, both sides streaming, blind order, verdicts in model
terms, replays) is ``evaluation.comparisons``; this tab shows it and takes the clicks.
"""

from __future__ import annotations

import gradio as gr

from dialogues import project
from evaluation import comparisons
from evaluation.comparisons import ComparisonError, Session
from lima import conversation as conv, paper
from lima.service_client import ServiceClient, ServiceProblem
from lima.store import chatlog, connect
from training import launcher
from ui import pickers, rating
from ui.chat_tab import FOLLOW_UP_SLOTS, HELP
from ui.rating import rater_of


def default_pair(names: list[str]) -> tuple[str | None, str | None]:
    """The two models a comparison starts with: the paper's pair when both are served, else the
    first and the last listed."""
    left = paper.ZERO_SHOT if paper.ZERO_SHOT in names else (names[0] if names else None)
    right = paper.DIALOGUE if paper.DIALOGUE in names else (names[-1] if names else None)
    return left, right


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
        first = gr.Chatbot(label="A", feedback_options=list(paper.LABELS), height=420, elem_id="compare-a")
        second = gr.Chatbot(label="B", feedback_options=list(paper.LABELS), height=420, elem_id="compare-b")
    with gr.Row():
        follow_ups = [gr.Button(visible=False, size="sm") for _ in range(FOLLOW_UP_SLOTS)]
    with gr.Row():
        message = gr.Textbox(placeholder="Message for both (Enter sends, Shift+Enter for a new line)", lines=1,
                             max_lines=12, scale=8, show_label=False, elem_id="compare-message")
        send = gr.Button("Send to both", variant="primary", scale=1, elem_id="compare-send")
    with gr.Row():
        verdict = gr.Radio(label="Whole-conversation verdict", choices=list(comparisons.CHOICES),
                           elem_id="compare-verdict")
        save = gr.Button("Save verdict", elem_id="compare-save")
    status = gr.Markdown(elem_id="compare-status")
    with gr.Accordion("Before and after the last preference run", open=False) as proof_box:
        proof_note = gr.Markdown(elem_id="proof-note")
        with gr.Row():
            failed = gr.Dropdown(label="A conversation with a reply rated Fail", choices=[],
                                 elem_id="proof-conversation")
            proof_button = gr.Button("Open before and after", elem_id="proof-open")
    proof_models = gr.State(None)
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
        return (gr.update(value=rating.shown_messages(a.turns), feedback_value=a.ratings, label=session.title(0)),
                gr.update(value=rating.shown_messages(b.turns), feedback_value=b.ratings, label=session.title(1)),
                session, f"{label}{' · ' + note if note else ''}")

    outputs = [first, second, state, status]

    def buttons(opener_id):
        texts = opener_by_id[opener_id].follow_ups if opener_id in opener_by_id else []
        return [gr.update(value=texts[i], visible=True) if i < len(texts) else gr.update(visible=False)
                for i in range(FOLLOW_UP_SLOTS)]

    def on_start(left, right, is_blind, opener_id, request: gr.Request):
        try:
            session = comparisons.start(left, right, is_blind, opener_id or None, rater_of(None, request))
        except ComparisonError as problem:
            gr.Warning(str(problem))
            return (gr.update(), *view(Session()), *buttons(None))
        text = opener_by_id[opener_id].message if opener_id in opener_by_id else ""
        return (text, *view(session, "send the first message"), *buttons(opener_id))

    begin.click(on_start, [left_model, right_model, blind, opener], [message, *outputs, *follow_ups])

    def on_send(text, session, left, right, is_blind, opener_id, request: gr.Request):
        pickers_shown = (gr.skip(), gr.skip())
        try:
            text = conv.check_message(text)
            yield ("", *(rating.shown_sending(session.chats[side].turns, text) for side in session.order),
                   gr.skip(), "sending…", *pickers_shown)
            if session.comparison_id is None:
                # Enter before "Start comparison" starts it with the models shown (the default pair
                # when the page has not filled its lists yet), as a person means it.
                if not (left and right):
                    left, right = default_pair(client.models())
                    pickers_shown = (gr.update(value=left), gr.update(value=right))
                session = comparisons.start(left, right, is_blind, opener_id or None, rater_of(None, request))
        except (ServiceProblem, ComparisonError) as problem:
            gr.Warning(str(problem))
            yield (text, *view(session, f"⚠ not sent: {problem}"), *pickers_shown)
            return
        try:
            for session, problems in comparisons.send_both(client, session, text, rater_of(None, request)):
                note = "; ".join(f"{session.title(session.order.index(side))}: {p}" for side, p in problems.items())
                waiting = next((c.waiting for c in session.chats.values() if c.waiting), "")
                yield ("", *view(session, pickers.waiting_note(waiting) if waiting else note), *pickers_shown)
            for side, problem in problems.items():
                gr.Warning(f"{session.title(session.order.index(side))}: {problem}")
        except ServiceProblem as problem:
            gr.Warning(str(problem))
            yield (text, *view(session), *pickers_shown)

    send_inputs = [message, state, left_model, right_model, blind, opener]
    send_outputs = [message, *outputs, left_model, right_model]
    send.click(on_send, send_inputs, send_outputs)
    message.submit(on_send, send_inputs, send_outputs)
    for button in follow_ups:
        button.click(lambda text: text, button, message).then(on_send, send_inputs, send_outputs)

    def rater(position: int):
        def on_rate(session: Session, data: gr.LikeData, request: gr.Request):
            side = session.order[position]
            session.chats[side], note = rating.rate(session.chats[side], data, rater_of(None, request))
            return session, f"{session.title(position)}: {note}"
        return on_rate

    rating.on_click(first, rater(0), state, [state, status])
    rating.on_click(second, rater(1), state, [state, status])

    def on_verdict(session, choice, request: gr.Request):
        try:
            session = comparisons.save_verdict(session, choice, rater_of(None, request))
        except ComparisonError as problem:
            gr.Warning(str(problem))
        return view(session)

    save.click(on_verdict, [state, verdict], outputs)

    def on_replay(conversation_id, model):
        if not conversation_id or not model:
            gr.Warning("Pick a saved conversation and a model to replay it on.")
            return view(Session())
        try:
            session = comparisons.replay_session(client, conversation_id, model)
        except (ServiceProblem, ComparisonError) as exc:
            gr.Warning(str(exc))
            return view(Session())
        return view(session, "replay done: rate both sides and give a verdict")

    replay_button.click(on_replay, [saved, replay_model], outputs)

    saved.focus(pickers.saved_conversations, None, saved)

    def proof():
        """The latest KTO/DPO run's models and the conversations whose replies it learnt were Fail."""
        run = launcher.last_preference_run()
        if run is None:
            return (gr.update(open=False), "No KTO or DPO run yet: rate replies, then learn from them in the "
                    "Retrain tab.", gr.update(choices=[], value=None), None)
        db = connect()
        ids = (run.rating_ids or {}).get("fail_conversations") or []
        titles = [(f"{c['title'] or c['id']} · {c['model']}", c["id"])
                  for c in (chatlog.conversation(db, i) for i in ids) if c]
        note = (f"**{run.from_model}** (before) vs **{run.model_name}** (after: run `{run.id}`, "
                f"{run.stage.upper()} on {run.examples} row{'s' * (run.examples != 1)}). "
                f"{len(titles)} conversation{' has' if len(titles) == 1 else 's have'} a reply rated Fail: open one "
                "to send its messages to both and see whether it learnt.")
        return (gr.update(open=True), note, gr.update(choices=titles, value=titles[0][1] if titles else None),
                (run.from_model, run.model_name))

    def on_proof(conversation_id, models, request: gr.Request):
        if not models or not conversation_id:
            gr.Warning("No conversation to open: a KTO or DPO run lists the ones with a reply rated Fail.")
            yield (*view(Session()), gr.update(), gr.update())
            return
        # the model pickers show the pair on screen, so "Start comparison" goes on with the same two
        pair = (gr.update(value=models[0]), gr.update(value=models[1]))
        session, problems = Session(), {}
        try:
            for session, problems in comparisons.before_after(client, conversation_id, *models,
                                                              rater_of(None, request)):
                yield (*view(session, "before (A) and after (B): sending the conversation's messages to both"),
                       *pair)
        except (ServiceProblem, ComparisonError) as exc:
            gr.Warning(str(exc))
            yield (*view(session), *pair)
            return
        note = "before (A) and after (B): rate both sides and give a verdict"
        if problems:
            said = "; ".join(f"{session.title(session.order.index(side))}: {p}" for side, p in problems.items())
            gr.Warning(f"stopped before the end of the conversation: {said}")
            note += f" · stopped before the end of the conversation: {said}"
        yield (*view(session, note), *pair)

    proof_button.click(on_proof, [failed, proof_models], [*outputs, left_model, right_model])

    def models(left=None, right=None, replay=None):
        """The served models in the three lists; a pick still served stays (the tab is opened again
        and again), the others start from ``default_pair``."""
        names = pickers.served_models(client)
        if names is None:
            return gr.update(), gr.update(), gr.update()
        first, second = default_pair(names)
        choices = pickers.labelled(names)
        return tuple(gr.update(choices=choices, value=picked if picked in names else default)
                     for picked, default in ((left, first), (right, second), (replay, second)))

    picks = [left_model, right_model, replay_model]
    return {"load": (models, picks, picks),
            "proof": (proof, None, [proof_box, proof_note, failed, proof_models])}
