"""Comparisons: two conversations fed the same user turns, rated side by side, then a verdict.

As in the paper's section 6: a comparison starts from one of the 10 openers (or free text),
every user message goes to both models, both replies stream at once, each is rated, and at the
end a rater says which conversation was better, or a tie. Blind mode shuffles the sides; the
verdict is always stored in model terms ('left', 'right' or 'tie' of ``left_model`` and
``right_model``), whatever the screen showed. A replay sends the user turns of a saved
conversation to another model and links the two as a comparison (kind 'replay'); after a
preference run, a conversation with replies rated Fail is replayed on the model before and the
model after (kind 'before-after').

The table itself is ``lima/store/comparisons.py``'s. The Compare tab and ``lima replay`` call this
module:

    lima replay CONVERSATION_ID --model lima-dialogue [--service-url URL]
"""

from __future__ import annotations

import os
import queue
import random
import sys
import threading
from dataclasses import dataclass, field

from lima import conversation as conv
from lima.service_client import ServiceClient, ServiceProblem
from lima.store import chatlog, comparisons as comparisons_store, connect

CHOICES = ("first better", "second better", "tie")


class ComparisonError(ValueError):
    """A comparison cannot go on as asked; the message says what to do."""


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


def record_verdict(db, comparison_id: str, verdict: str, rater: str | None) -> None:
    """``verdict`` in model terms: 'left', 'right' or 'tie'."""
    try:
        comparisons_store.record_verdict(db, comparison_id, verdict, rater)
    except ValueError as exc:
        raise ComparisonError(str(exc)) from None


def start(left_model: str, right_model: str, blind: bool, opener_id: str | None, rater: str | None) -> Session:
    """A new live comparison: two empty conversations, linked."""
    if not left_model or not right_model:
        raise ComparisonError("Pick both models first.")
    if left_model == right_model:
        raise ComparisonError("Pick two different models to compare.")
    db = connect()
    session = Session(models={"left": left_model, "right": right_model}, blind=blind)
    if blind and random.random() < 0.5:
        session.order = ("right", "left")
    for side, model in session.models.items():
        session.chats[side].conversation_id = chatlog.new_conversation(db, model, rater, opener_id, source="compare")
    chats = session.chats
    session.comparison_id = comparisons_store.create(db, left_model, right_model, chats["left"].conversation_id,
                                                     chats["right"].conversation_id, opener_id, "live", blind,
                                                     session.order[0] == "right")
    return session


def send_both(client: ServiceClient, session: Session, text: str, rater: str | None, **params):
    """Send ``text`` to both sides at once; yields (session, problems by side) as either side streams."""
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
    """``choice`` as the rater saw it (first/second better, tie), stored in model terms."""
    if session.comparison_id is None:
        raise ComparisonError("Start a comparison first.")
    if choice not in CHOICES:
        raise ComparisonError(f"Choose one of: {', '.join(CHOICES)}.")
    verdict = "tie" if choice == "tie" else session.order[0 if choice == "first better" else 1]
    record_verdict(connect(), session.comparison_id, verdict, rater)
    session.verdict = verdict
    return session


def replay(client: ServiceClient, conversation_id: str, model: str, **params) -> tuple[str, str]:
    """Send a saved conversation's user turns, in order, to ``model``: (new conversation id,
    comparison id). Stops at the first failed reply and keeps what was done."""
    db = connect()
    original = chatlog.conversation(db, conversation_id)
    if original is None:
        raise ComparisonError(f"there is no conversation {conversation_id!r}")
    users = _user_turns(original)
    chat = _new_replay(db, original, model, users[0])
    comparison_id = comparisons_store.create(db, original["model"], model, conversation_id, chat.conversation_id,
                                             original["opener_id"], kind="replay")
    for text in users:
        for _ in conv.send(client, chat, text, model, **params):
            pass
    return chat.conversation_id, comparison_id


def _user_turns(original: dict) -> list[str]:
    users = [t["content"] for t in original["turns"] if t["role"] == "user"]
    if not users:
        raise ComparisonError(f"conversation {original['id']} has no user turn to replay")
    return users


def _new_replay(db, original: dict, model: str, title: str) -> conv.Chat:
    chat = conv.Chat()
    chat.conversation_id = chatlog.new_conversation(db, model, original["rater"], original["opener_id"],
                                                    source="replay", replay_of=original["id"], title=title)
    return chat


def before_after(client: ServiceClient, conversation_id: str, before: str, after: str, rater: str | None = None,
                 **params):
    """A conversation whose replies were rated Fail, its user turns sent again, in order, to the model
    a preference run started from (left) and to the one it made (right), both streaming at once, so
    the rater watches whether it learnt, then rates both sides and gives a verdict (kind
    'before-after'). Yields (session, problems by side) as ``send_both`` does; after a user turn that
    either side could not answer it stops, keeping what both said, so the sides stay turn for turn."""
    db = connect()
    original = chatlog.conversation(db, conversation_id)
    if original is None:
        raise ComparisonError(f"there is no conversation {conversation_id!r}")
    users = _user_turns(original)
    session = Session(models={"left": before, "right": after})
    session.chats = {side: _new_replay(db, original, model, users[0]) for side, model in session.models.items()}
    session.comparison_id = comparisons_store.create(db, before, after, session.chats["left"].conversation_id,
                                                     session.chats["right"].conversation_id, original["opener_id"],
                                                     kind="before-after")
    for text in users:
        problems: dict[str, str] = {}
        for session, problems in send_both(client, session, text, rater, **params):
            yield session, problems
        if problems:
            return


def replay_session(client: ServiceClient, conversation_id: str, model: str, **params) -> Session:
    """Replay, then the comparison as a session to rate and judge (the original on the left)."""
    new_id, comparison_id = replay(client, conversation_id, model, **params)
    row = comparisons_store.get(connect(), comparison_id)
    session = Session(comparison_id, {"left": row.left_model, "right": model})
    session.chats = {"left": conv.load(conversation_id), "right": conv.load(new_id)}
    return session


# -- `lima replay` ---------------------------------------------------------------------------------

def main(args) -> int:
    client = ServiceClient(args.service_url, os.environ.get("LIMA_API_KEY"))
    try:
        new_id, comparison_id = replay(client, args.conversation, args.model)
    except (ComparisonError, ServiceProblem) as exc:
        print(f"lima replay: {exc}", file=sys.stderr)
        return 2
    print(f"replayed {args.conversation} on {args.model}: conversation {new_id}, comparison {comparison_id}")
    return 0


def add_arguments(parser) -> None:
    parser.add_argument("conversation", help="the id of the conversation to replay")
    parser.add_argument("--model", required=True, help="the model to answer this time")
    parser.add_argument("--service-url", default=os.environ.get("LIMA_SERVICE_URL", "http://127.0.0.1:8000"))
