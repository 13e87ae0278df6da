"""How faithfully a served model reproduces the float32 model: perplexity and greedy agreement.

Every engine, quantization or sampling change is judged by these two numbers beside its speed
(``bench/serve.py``) and by tests that fail when they drift (``tests/test_int8_fidelity.py``):
  - perplexity on conversations (the benchmark and the tests use the project's dialogue chains),
    rendered with the model's chat template and cut at ``max_tokens``, every token scored;
  - greedy agreement: the share of float32's greedy reply that a configuration's reply repeats
    from the start, and how many replies are identical.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch


def token_ids(tokenizer, conversations: Sequence[list[dict]], max_tokens: int = 768) -> list[list[int]]:
    """Each conversation (OpenAI messages) as the model sees it, cut at ``max_tokens`` tokens."""
    return [tokenizer.apply_chat_template(list(messages), tokenize=True, return_dict=False)[:max_tokens]
            for messages in conversations]


def perplexity(logits: Callable[[list[int]], torch.Tensor], texts: Sequence[list[int]]) -> float:
    """exp(mean negative log-likelihood) of every token after the first, over all ``texts``;
    ``logits(ids)`` gives the (S, V) next-token logits at every position."""
    nll, count = 0.0, 0
    for ids in texts:
        logprobs = logits(ids).float().log_softmax(-1)
        nll -= logprobs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum().item()
        count += len(ids) - 1
    return math.exp(nll / count)


def shared_prefix(reply: str, reference: str) -> float:
    """The share of ``reference`` that ``reply`` repeats from its first character (1.0 when equal)."""
    if not reference:
        return 1.0 if not reply else 0.0
    n = 0
    for a, b in zip(reply, reference):
        if a != b:
            break
        n += 1
    return n / len(reference)


def agreement(replies: Sequence[str], references: Sequence[str]) -> tuple[float, int]:
    """(mean shared prefix, identical replies) of ``replies`` against the float32 ``references``."""
    shares = [shared_prefix(r, ref) for r, ref in zip(replies, references, strict=True)]
    return sum(shares) / len(shares), sum(r == ref for r, ref in zip(replies, references))
