"""Per-request sampling parameters: the paper's decoding unless the request says otherwise."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from lima.paper import DECODING


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = DECODING["temperature"]
    top_p: float = DECODING["top_p"]
    top_k: int = 0
    repetition_penalty: float = DECODING["repetition_penalty"]
    max_tokens: int | None = None  # None: the paper's 2,048, capped by the context window
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None
    ignore_eos: bool = False
    choices: tuple[str, ...] = ()  # guided choice: the reply is exactly one of these
    json_schema: str | None = None  # the reply is JSON following this schema (as JSON text)
    logprobs: int | None = None  # None: none; k: the sampled token's log probability and k alternatives

    @classmethod
    def from_request(cls, req) -> "SamplingParams":
        """Paper defaults, overridden by whatever the request (chat or text completion) set."""
        given = {k: getattr(req, k) for k in ("temperature", "top_p", "top_k", "repetition_penalty", "seed")
                 if getattr(req, k) is not None}
        max_tokens = getattr(req, "max_completion_tokens", None) or req.max_tokens
        schema = req.response_schema
        return cls(**given, max_tokens=max_tokens, stop=tuple(req.stop_list), ignore_eos=req.ignore_eos,
                   choices=tuple(getattr(req, "guided_choice", None) or ()),
                   json_schema=None if schema is None else json.dumps(schema, sort_keys=True),
                   logprobs=req.top_logprobs_wanted)

    @property
    def constrained(self) -> bool:
        return bool(self.choices) or self.json_schema is not None
