"""Per-request sampling parameters: the paper's decoding unless the request says otherwise."""

from __future__ import annotations

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

    @classmethod
    def from_request(cls, req) -> "SamplingParams":
        """Paper defaults, overridden by whatever the request set."""
        given = {k: getattr(req, k) for k in ("temperature", "top_p", "top_k", "repetition_penalty", "seed")
                 if getattr(req, k) is not None}
        max_tokens = req.max_completion_tokens or req.max_tokens
        return cls(**given, max_tokens=max_tokens, stop=tuple(req.stop_list), ignore_eos=req.ignore_eos,
                   choices=tuple(req.guided_choice or ()))

    def as_dict(self) -> dict:
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                "repetition_penalty": self.repetition_penalty, "max_tokens": self.max_tokens,
                "stop": list(self.stop), "seed": self.seed, **({"choices": list(self.choices)} if self.choices else {})}
