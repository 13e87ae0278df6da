"""The repetition penalty as this product applies it: CTRL's (as in transformers), with the tokens
that end a turn exempt.

Every LIMA prompt contains the end-of-turn token (it ends every utterance), so penalising tokens
"already seen" also penalises finishing: with the paper's 1.2, 7 of the 10 evaluation openers'
replies ran to the 2,048-token limit on the embedded model (1 of 10 with the exemption). The
penalty is meant against repeated content. The service's sampler and training's dev answers both
use this definition.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


def penalise(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor | float) -> torch.Tensor:
    """Shrink the logits of ``seen`` tokens (a boolean mask like ``logits``): positive ones are
    divided by ``penalty``, negative ones multiplied."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


class ExemptStopsPenalty(LogitsProcessor):
    """``penalise`` for transformers' ``generate``: every token of the prompt and the output so far
    is seen, except ``stop_ids``."""

    def __init__(self, penalty: float, stop_ids: set[int]):
        self.penalty, self.stop_ids = penalty, sorted(stop_ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        seen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, input_ids.clamp(max=scores.shape[1] - 1), True)
        seen[:, [i for i in self.stop_ids if i < scores.shape[1]]] = False
        return penalise(scores, seen, self.penalty)
