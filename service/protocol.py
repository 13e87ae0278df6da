"""OpenAI chat-completions protocol: the request we accept, and OpenAI-style errors.

Responses are built from the ``openai`` package's own types (``ChatCompletion``,
``ChatCompletionChunk``) so the wire format is the client's, not a copy of it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationInfo, field_validator, model_validator

from lima.validation import non_blank

Choice = non_blank("a guided choice must say something")


# Above this no model we serve has a context window; a bigger max_tokens is a typo, not a wish.
ABSURD_MAX_TOKENS = 1_000_000


class RequestError(Exception):
    """A client error with an OpenAI-style body: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None,
                 code: str | None = None, type: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.status, self.param, self.code, self.type = message, status, param, code, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    # Strict: a number or a list of parts is refused with a message naming the field, not coerced.
    content: StrictStr
    name: str | None = None

    @field_validator("content")
    @classmethod
    def says_something(cls, content: str, info: ValidationInfo) -> str:
        # A model may have answered with nothing; the conversation must still be able to go on.
        if info.data.get("role") != "assistant" and not content.strip():
            raise ValueError("content is empty")
        return content


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    # Unknown OpenAI fields (logprobs, tools, ...) are ignored rather than refused, like most
    # OpenAI-compatible servers, so stock clients keep working.
    model_config = ConfigDict(extra="ignore")

    model: StrictStr
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=ABSURD_MAX_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=ABSURD_MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    # vLLM's extensions, sent by the openai client through extra_body.
    top_k: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    ignore_eos: bool = False  # vLLM's extension: generate exactly max_tokens (benchmarks)
    # vLLM's extension: the reply is exactly one of these strings (a judge's label, say)
    guided_choice: list[Choice] | None = Field(default=None, min_length=2)
    n: int = Field(default=1, ge=1, le=1)
    user: str | None = None

    @model_validator(mode="after")
    def conversation_shape(self) -> "ChatCompletionRequest":
        roles = [m.role for m in self.messages]
        first_other = next((i for i, r in enumerate(roles) if r != "system"), len(roles))
        if "system" in roles[first_other:]:
            raise ValueError("system messages must come before the conversation, "
                             f"found one at messages[{roles.index('system', first_other)}]")
        if roles[-1] != "user":
            raise ValueError(f"the last message must be from the user, got '{roles[-1]}' "
                             f"at messages[{len(roles) - 1}]")
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop takes at most 4 sequences")
        return self

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else [s for s in self.stop if s]

    def openai_messages(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]


class ModelRegistration(BaseModel):
    """Body of ``POST /admin/models``: serve the model at ``path`` under ``name`` (replacing it)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
    path: StrictStr = Field(min_length=1)
