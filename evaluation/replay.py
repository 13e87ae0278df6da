"""Replay: send the user turns of a saved conversation, in order, to another model.

The result is a new conversation marked ``source='replay'`` with ``replay_of`` pointing at the
original, and a comparison (kind 'replay') linking the two so they can be rated and judged side
by side, e.g. the same chat against a freshly retrained model, without retyping.

    lima replay CONVERSATION_ID --model lima-dialogue [--service-url URL]
"""

from __future__ import annotations

import os
import sys
import uuid

from lima.store import chatlog, connect, utcnow
from ui import conversation as conv
from ui.service_client import ServiceClient, ServiceProblem


def replay(client: ServiceClient, conversation_id: str, model: str, **params) -> tuple[str, str]:
    """(new conversation id, comparison id); stops at the first failed reply and keeps what was done."""
    db = connect()
    original = chatlog.conversation(db, conversation_id)
    if original is None:
        raise ValueError(f"there is no conversation {conversation_id!r}")
    users = [t["content"] for t in original["turns"] if t["role"] == "user"]
    if not users:
        raise ValueError(f"conversation {conversation_id} has no user turn to replay")
    chat = conv.Chat()
    chat.conversation_id = chatlog.new_conversation(db, model, original["rater"], original["opener_id"],
                                                    source="replay", replay_of=conversation_id, title=users[0])
    comparison_id = uuid.uuid4().hex[:16]
    db["comparisons"].insert({"id": comparison_id, "created": utcnow(), "opener_id": original["opener_id"],
                              "left_model": original["model"], "right_model": model, "blind": 0, "swapped": 0,
                              "left_conversation": conversation_id, "right_conversation": chat.conversation_id,
                              "kind": "replay"})
    for text in users:
        for _ in conv.send(client, chat, text, model, **params):
            pass
    return chat.conversation_id, comparison_id


def main(args) -> int:
    client = ServiceClient(args.service_url, os.environ.get("LIMA_API_KEY"))
    try:
        new_id, comparison_id = replay(client, args.conversation, args.model)
    except (ValueError, ServiceProblem) as exc:
        print(f"lima replay: {exc}", file=sys.stderr)
        return 2
    print(f"replayed {args.conversation} on {args.model}: conversation {new_id}, comparison {comparison_id}")
    return 0


def add_arguments(parser) -> None:
    parser.add_argument("conversation", help="the id of the conversation to replay")
    parser.add_argument("--model", required=True, help="the model to answer this time")
    parser.add_argument("--service-url", default=os.environ.get("LIMA_SERVICE_URL", "http://127.0.0.1:8000"))
