"""OpenAI protocol: the chat and text completion requests we accept, and OpenAI-style errors.

Responses are built from the ``openai`` package's own types (``ChatCompletion``,
``ChatCompletionChunk``, ``Completion``) so the wire format is the client's, not a copy of it.

What the ecosystem's clients send is accepted as vLLM accepts it: content as a list of text parts
(joined with newlines), the ``developer`` role (a system message). What the served models cannot
do is refused with a 400 naming the field, never dropped silently: image, audio and file parts,
tools and tool calls, several choices per request, sampling fields the engine does not apply
(``UNHONOURED``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationInfo, field_validator,
                      model_validator)

from lima.validation import non_blank

Choice = non_blank("a guided choice must say something")


# Above this no model we serve has a context window; a bigger max_tokens is a typo, not a wish.
ABSURD_MAX_TOKENS = 1_000_000
# OpenAI's own limit on alternatives per token (vLLM's default too).
MAX_TOP_LOGPROBS = 20
TEXT_ONLY = "the served models read text only"
NO_TOOLS = "the served models do not call tools"

# OpenAI fields that would change the answer and that the service does not apply: a request that
# sets one to anything but the values that ask nothing is refused, naming it and what to do instead.
UNHONOURED = {
    "frequency_penalty": ((None, 0), "use repetition_penalty (extra_body), the paper's penalty"),
    "presence_penalty": ((None, 0), "use repetition_penalty (extra_body), the paper's penalty"),
    "logit_bias": ((None, {}), "the served models take no per-token bias"),
    "audio": ((None,), TEXT_ONLY),
    "modalities": ((None, ["text"]), TEXT_ONLY),
    "web_search_options": ((None,), "the served models cannot search the web"),
    "prediction": ((None,), "predicted outputs are not supported"),
    "functions": ((None, []), NO_TOOLS),
    "function_call": ((None, "none"), NO_TOOLS),
}


class RequestError(Exception):
    """A client error with an OpenAI-style body: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None,
                 code: str | None = None, type: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.status, self.param, self.code, self.type = message, status, param, code, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def joined_text(content: Any) -> Any:
    """A list of content parts as one string (text parts joined with newlines, as vLLM does); a
    part the models cannot read is refused naming it. Anything else is left to the type check."""
    if not isinstance(content, list):
        return content
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal") and isinstance(part.get(kind), str):
            texts.append(part[kind])
        elif kind in ("text", "refusal"):
            raise ValueError(f"content[{i}].{kind}: a {kind} part needs a string '{kind}'")
        elif kind is None:
            raise ValueError(f"content[{i}]: a content part is an object with a 'type' (such as 'text')")
        else:
            raise ValueError(f"content[{i}] is a '{kind}' part: {TEXT_ONLY}; send text parts")
    return "\n".join(texts)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # 'developer' is what newer OpenAI clients send instead of 'system': it is read as 'system'.
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    # Strict: a number is refused with a message naming the field, not coerced; a list of text parts
    # is joined into one string before the check.
    content: StrictStr
    name: str | None = None
    tool_calls: list | None = None

    @field_validator("role")
    @classmethod
    def reads_roles(cls, role: str) -> str:
        if role in ("tool", "function"):
            raise ValueError(f"a '{role}' message answers a tool call: {NO_TOOLS}")
        return "system" if role == "developer" else role

    @field_validator("content", mode="before")
    @classmethod
    def parts_to_text(cls, content: Any) -> Any:
        return joined_text(content)

    @field_validator("content")
    @classmethod
    def says_something(cls, content: str, info: ValidationInfo) -> str:
        # A model may have answered with nothing; the conversation must still be able to go on.
        if info.data.get("role") != "assistant" and not content.strip():
            raise ValueError("content is empty")
        return content

    @field_validator("tool_calls")
    @classmethod
    def no_tool_calls(cls, calls: list | None) -> None:
        if calls:
            raise ValueError(NO_TOOLS)
        return None


class StreamOptions(BaseModel):
    include_usage: bool = False


class JsonSchema(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str = "response"
    description: str | None = None
    schema_: dict = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """``{"type": "text"}``, ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {...}}``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None

    @model_validator(mode="after")
    def schema_given(self) -> "ResponseFormat":
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("a json_schema response format needs 'json_schema': {'name', 'schema'}")
        return self

    def reply_schema(self) -> dict | None:
        """The JSON schema the reply must follow; None for plain text. ``json_object`` is any object."""
        if self.type == "json_object":
            return {"type": "object"}
        return self.json_schema.schema_ if self.type == "json_schema" else None


class SamplingRequest(BaseModel):
    """What chat and text completions share: the model, streaming, and how to sample."""

    # Unknown OpenAI fields are ignored rather than refused, like most OpenAI-compatible servers, so
    # stock clients keep working; the known ones that would change the answer are checked below.
    model_config = ConfigDict(extra="allow")

    model: StrictStr
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=ABSURD_MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    # vLLM's extensions, sent by the openai client through extra_body.
    top_k: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    ignore_eos: bool = False  # vLLM's extension: generate exactly max_tokens (benchmarks)
    n: int = Field(default=1, ge=1, le=1)
    user: str | None = None

    refused: ClassVar[dict] = UNHONOURED

    @model_validator(mode="after")
    def nothing_unhonoured(self) -> "SamplingRequest":
        for field, (asks_nothing, instead) in self.refused.items():
            if (self.model_extra or {}).get(field) not in asks_nothing:
                raise ValueError(f"{field} is not supported by this service: {instead}")
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop takes at most 4 sequences")
        return self

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else [s for s in self.stop if s]

    @property
    def top_logprobs_wanted(self) -> int | None:
        """None: no log probabilities; k: the sampled token's and the k likeliest alternatives'."""
        return None

    @property
    def response_schema(self) -> dict | None:
        return None


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=ABSURD_MAX_TOKENS)
    # vLLM's extension: the reply is exactly one of these strings (a judge's label, say)
    guided_choice: list[Choice] | None = Field(default=None, min_length=2)
    logprobs: StrictBool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None
    tools: list | None = None
    tool_choice: Any = None

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
        return self

    @model_validator(mode="after")
    def no_tool_calling(self) -> "ChatCompletionRequest":
        if self.tools and self.tool_choice != "none":
            raise ValueError(f"tools: {NO_TOOLS}; send no tools (or tool_choice 'none')")
        if self.tool_choice not in (None, "none", "auto"):
            raise ValueError(f"tool_choice: {NO_TOOLS}; leave it out or send 'none'")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.guided_choice and self.response_schema is not None:
            raise ValueError("guided_choice and response_format each constrain the reply: send one")
        return self

    @property
    def top_logprobs_wanted(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    @property
    def response_schema(self) -> dict | None:
        return self.response_format.reply_schema() if self.response_format else None

    def openai_messages(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]


class CompletionRequest(SamplingRequest):
    """``POST /v1/completions``: a text prompt continued as it is, no chat template."""

    prompt: StrictStr | list[StrictStr]
    # OpenAI allows 0-5 here; vLLM allows as many alternatives as chat's top_logprobs.
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    best_of: int | None = Field(default=None, ge=1, le=1)
    refused: ClassVar[dict] = {**UNHONOURED,
                               "echo": ((None, False), "the reply holds only the continuation"),
                               "suffix": ((None, ""), "the served models do not fill in the middle")}

    @field_validator("prompt")
    @classmethod
    def one_prompt(cls, prompt: str | list[str]) -> str:
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ValueError(f"one prompt per request (got {len(prompt)}); send them as separate requests")
            prompt = prompt[0]
        if not prompt:
            raise ValueError("the prompt is empty")
        return prompt

    @property
    def top_logprobs_wanted(self) -> int | None:
        return self.logprobs


class ModelRegistration(BaseModel):
    """Body of ``POST /admin/models``: serve the model at ``path`` under ``name`` (replacing it)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
    path: StrictStr = Field(min_length=1)
