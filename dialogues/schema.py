"""The one format for conversations: JSONL, one record per line, messages with role and content.

A training example (LIMA single-turn rows included) alternates user and assistant, starting with
the user and ending with the assistant. A dialogue chain is an example with at least two user
turns plus a kind, a topic and tags. An evaluation opener is a first user message and the 2 to 4
follow-ups a rater can send. Field by field: dialogues/README.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from lima.validation import non_blank

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: non_blank("empty turn")


class Example(BaseModel):
    """One training conversation."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    source: StrictStr = Field(min_length=1)
    messages: list[Message] = Field(min_length=2)

    @model_validator(mode="after")
    def alternates(self):
        for i, message in enumerate(self.messages):
            expected = "user" if i % 2 == 0 else "assistant"
            if message.role != expected:
                where = f"two '{message.role}' turns in a row" if i else "the first turn must be the user's"
                raise ValueError(f"messages[{i}].role: {where} (expected '{expected}')")
        if self.messages[-1].role != "assistant":
            raise ValueError(f"messages[{len(self.messages) - 1}].role: the last turn must be the assistant's")
        return self

    @property
    def user_turns(self) -> int:
        return sum(m.role == "user" for m in self.messages)

    def as_openai(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]


class Chain(Example):
    """A multi-turn dialogue chain: later user turns depend on earlier answers."""

    kind: Literal["open", "technical", "lima", "live"]
    topic: StrictStr | None = None
    tags: list[StrictStr] = Field(default_factory=list)

    @model_validator(mode="after")
    def multi_turn(self):
        if self.user_turns < 2:
            raise ValueError(f"messages: a dialogue chain needs at least 2 user turns, found {self.user_turns}")
        return self


class Opener(BaseModel):
    """The first message of a comparison conversation, with scripted follow-ups."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    source: StrictStr = Field(min_length=1)
    task: StrictStr = Field(min_length=1)
    topic: StrictStr = Field(min_length=1)
    message: non_blank("empty message")
    follow_ups: list[non_blank("empty follow-up")] = Field(min_length=2, max_length=4)
