"""Turn rated live conversations into dialogue chains for the next retrain.

A conversation qualifies when every assistant turn is either rated Pass or Excellent, or was
rewritten by a rater (the rewrite replaces the original, whatever its rating). Unrated turns
and Fail turns without a rewrite disqualify it, as does having fewer than two exchanges. An
unanswered last user turn is dropped.

The input shape, as the chat log (ui/) provides it::

    {"id": "c1", "model": "lima-dialogue", "opener": "opener-03" | None,
     "turns": [{"role": "user" | "assistant", "content": str,
                "rating": "Fail" | "Pass" | "Excellent" | None, "rewrite": str | None}, ...]}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import ValidationError

from dialogues.schema import Chain
from lima.validation import validation_message

GOOD = {"Pass", "Excellent"}


@dataclass
class Skipped:
    conversation: str
    reason: str


def _chain(conversation: dict) -> Chain | str:
    turns = list(conversation.get("turns") or [])
    if turns and turns[-1]["role"] == "user":
        turns = turns[:-1]
    messages, rewritten = [], False
    for position, turn in enumerate(turns):
        content = turn["content"]
        if turn["role"] == "assistant":
            if turn.get("rewrite"):
                content, rewritten = turn["rewrite"], True
            elif turn.get("rating") is None:
                return f"assistant turn {position} is not rated"
            elif turn["rating"] not in GOOD:
                return f"assistant turn {position} is rated {turn['rating']} and was not rewritten"
        messages.append({"role": turn["role"], "content": content})
    try:
        return Chain(id=f"live-{conversation['id']}", source=f"live/{conversation.get('model') or 'unknown'}",
                     kind="live", topic=conversation.get("opener"), tags=["rewritten"] if rewritten else [],
                     messages=messages)
    except ValidationError as exc:
        return validation_message(exc.errors())[0]


def export_chains(conversations: Iterable[dict]) -> tuple[list[Chain], list[Skipped]]:
    """(chains, skipped conversations with the reason each was left out)."""
    chains, skipped = [], []
    for conversation in conversations:
        result = _chain(conversation)
        if isinstance(result, Chain):
            chains.append(result)
        else:
            skipped.append(Skipped(str(conversation.get("id")), result))
    return chains, skipped
