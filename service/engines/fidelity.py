"""How faithfully a served model reproduces the float32 model: perplexity, top tokens and greedy agreement.

Every engine, quantization or sampling change is judged by these numbers beside its speed
(``bench/serve.py``) and by tests that fail when they drift (``tests/test_engine_fidelity.py``):
  - perplexity on conversations (the benchmark and the tests use the project's dialogue chains),
    rendered with the model's chat template and cut at ``max_tokens``, every token scored;
  - top tokens, in the same pass: at how many positions the most likely next token differs from
    float32's, and how many of those float32 decides by a margin of ``DECIDED`` or more. Perplexity
    averages over every position and can hide a change that flips near-ties one way; a float32
    margin of 0.01 is one that float16 weights alone never overturned on the chains;
  - greedy agreement: the share of float32's greedy reply that a configuration's reply repeats
    from the start, and how many replies are identical.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

DECIDED = 0.01  # a float32 margin (top logit minus the runner-up's) that counts as decided


def token_ids(tokenizer, conversations: Sequence[list[dict]], max_tokens: int = 768) -> list[list[int]]:
    """Each conversation (OpenAI messages) as the model sees it, cut at ``max_tokens`` tokens."""
    return [tokenizer.apply_chat_template(list(messages), tokenize=True, return_dict=False)[:max_tokens]
            for messages in conversations]


@dataclass
class TeacherForced:
    """One pass over texts, every next token scored: the perplexity, each position's top token
    and its margin over the runner-up (``tops``, one pair of tensors per text) and, against a
    reference's ``tops``, at how many positions the top token differs (``changed``) and how many
    of those the reference decides by ``DECIDED`` or more (``decided_changed``)."""
    perplexity: float
    tops: list[tuple[torch.Tensor, torch.Tensor]] = field(repr=False)
    changed: int | None = None
    decided_changed: int | None = None


def teacher_forced(logits: Callable[[list[int]], torch.Tensor], texts: Sequence[list[int]],
                   reference: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None) -> TeacherForced:
    """``logits(ids)`` gives the (S, V) next-token logits at every position; ``reference``: the
    float32 model's ``tops`` over the same texts, to count the positions whose top token changed."""
    nll, count, tops = 0.0, 0, []
    changed, decided = (None, None) if reference is None else (0, 0)
    for i, ids in enumerate(texts):
        scores = logits(ids).float()
        nll -= scores.log_softmax(-1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum().item()
        count += len(ids) - 1
        best = scores.topk(2, dim=-1)
        tops.append((best.indices[:, 0], best.values[:, 0] - best.values[:, 1]))
        if reference is not None:
            top, margin = reference[i]
            differs = best.indices[:, 0] != top
            changed += int(differs.sum())
            decided += int((differs & (margin >= DECIDED)).sum())
    return TeacherForced(math.exp(nll / count), tops, changed, decided)


def perplexity(logits: Callable[[list[int]], torch.Tensor], texts: Sequence[list[int]]) -> float:
    """exp(mean negative log-likelihood) of every token after the first, over all ``texts``."""
    return teacher_forced(logits, texts).perplexity


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
