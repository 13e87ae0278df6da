"""The narrow interface every engine offers the HTTP layer.

An engine serves named models. The app validates the OpenAI request, then asks the engine to
``prepare`` it (template, token counts, context check: errors are the client's) and to ``stream``
the prepared generation as ``Delta`` events. Adding, replacing and removing models happen while
serving; ``sleep``/``wake`` free and restore the accelerator around a training run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from service.sampling import SamplingParams


class EngineError(Exception):
    """A request the engine cannot serve. Engines raise these; ``service/app.py`` alone turns each
    kind into an HTTP answer. ``param`` names the request field at fault, where one is."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class UnknownModel(EngineError):
    """No model of that name is served."""

    def __init__(self, name: str, known: list[str]):
        super().__init__(f"The model '{name}' does not exist. Known models: {', '.join(known) or 'none'}", "model")
        self.name = name


class InvalidRequest(EngineError):
    """The request cannot be served as asked (the backend refused it)."""


class PromptTooLong(InvalidRequest):
    """The prompt, or the prompt plus max_tokens, does not fit the model's context."""


class EngineUnavailable(EngineError):
    """The engine cannot serve right now (sleeping for a training run, loading, backend down)."""


class WarmingUp(EngineUnavailable):
    """The model is still loading at the service's start; it will answer once loaded."""


@dataclass
class Logprob:
    """One generated token's text, its exact bytes (a token may hold part of a character) and log
    probability, and the likeliest alternatives (each a Logprob without alternatives)."""

    token: str
    logprob: float
    bytes: list[int] = field(default_factory=list)
    top: list["Logprob"] = field(default_factory=list)

    @classmethod
    def of(cls, raw: bytes, logprob: float, top: list["Logprob"] | None = None) -> "Logprob":
        return cls(raw.decode("utf-8", errors="replace"), logprob, list(raw), top or [])


@dataclass
class Delta:
    """One streamed event: new text, and on the last one the finish reason and usage."""

    text: str = ""
    finish_reason: str | None = None  # "stop" | "length" | "cancelled"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: list[Logprob] | None = None  # the tokens behind ``text``, when the request asked


@dataclass
class Prepared:
    """A validated request, ready to stream; engines keep what they need in ``payload``."""

    model: str
    messages: list[dict[str, str]] | str  # a plain string: a text completion's prompt
    params: SamplingParams
    prompt_tokens: int = 0
    payload: dict = field(default_factory=dict)


@dataclass
class ModelInfo:
    name: str
    source: str
    engine: str
    context_length: int | None = None
    state: str = "ready"  # "ready" | "sleeping" | "loading"


StageCallback = Callable[[str], None]


class Engine(ABC):
    kind: str

    @abstractmethod
    def models(self) -> list[ModelInfo]:
        """Models being served, in the order they were added."""

    @abstractmethod
    async def add_model(self, name: str, source: str, on_stage: StageCallback | None = None) -> ModelInfo:
        """Load ``source`` (folder or hub id) and serve it as ``name``, replacing any model of that
        name only once the new one has loaded. Raises lima.model_files.ModelLoadError. ``on_stage``
        hears each stage of a long load (a sentence such as "compiling the decoder"), from any thread."""

    @abstractmethod
    async def remove_model(self, name: str) -> None: ...

    @abstractmethod
    async def prepare(self, model: str, messages: list[dict[str, str]] | str, params: SamplingParams) -> Prepared:
        """Render and count the prompt (a conversation, or a plain text prompt continued as it is);
        raise an EngineError for anything the client got wrong."""

    @abstractmethod
    def stream(self, prepared: Prepared) -> AsyncIterator[Delta]:
        """Generate; the last Delta carries finish_reason and usage. Closing the iterator cancels."""

    async def sleep(self) -> None:
        """Free accelerator memory for a training run; requests get EngineUnavailable until wake."""

    async def wake(self) -> None:
        """Restore what sleep freed."""

    @property
    def sleeping(self) -> bool:
        return False

    def gpus(self) -> str:
        """The CUDA devices this engine's models occupy ('none' on a CPU), for training to avoid."""
        return "none"

    async def close(self) -> None:
        """Stop everything this engine started."""
