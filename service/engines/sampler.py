"""A batched sampler with one setting per row.

transformers' logits processors take one temperature/top-p/penalty for the whole batch; the
engine batches requests that each chose their own, so this applies them row-wise in a few
vectorised tensor operations (same definitions as transformers' warpers).

The repetition penalty is ``lima.repetition_penalty``'s: the tokens that end a turn are exempt.

A row may carry a grammar (``constraints.Matcher``: vLLM's ``guided_choice``, OpenAI's JSON
``response_format``): each step only the tokens it allows keep their scores, so the reply follows it.

A row may ask for log probabilities (OpenAI's ``logprobs``): they are those of the distribution the
token is drawn from before truncation: the model's logits after the repetition penalty and the
grammar's mask, divided by the temperature (1 for greedy rows), log-softmaxed over the whole
vocabulary; top-k and top-p then only narrow which tokens may be drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lima.repetition_penalty import penalise
from service.sampling import SamplingParams


# What JSON cannot carry for a token the mask rules out (-inf): vLLM's value.
MASKED_LOGPROB = -9999.0


@dataclass
class TokenLogprob:
    """The sampled token's log probability and the ``top`` likeliest tokens' (id, log probability)."""

    token: int
    logprob: float
    top: list[tuple[int, float]]


class BatchSampler:
    """Holds the per-row settings of the current batch; rows are added and removed with the batch."""

    def __init__(self, vocab_size: int, device: torch.device, exempt: set[int] | frozenset[int] = frozenset()):
        self.vocab_size, self.device = vocab_size, device
        # tokens never penalised for having been seen: the stop tokens
        self.penalisable = torch.ones(vocab_size, dtype=torch.bool, device=device)
        self.penalisable[[i for i in exempt if 0 <= i < vocab_size]] = False
        self.exempt = frozenset(exempt)
        self.temperature = torch.empty(0, 1, device=device)
        self.top_p = torch.empty(0, 1, device=device)
        self.top_k: list[int] = []
        self.penalty = torch.empty(0, 1, device=device)
        self.seen = torch.empty(0, vocab_size, dtype=torch.bool, device=device)
        self.generators: list[torch.Generator | None] = []
        self.matchers: list = []  # each row's grammar (constraints.Matcher) or None
        self.logprobs: list[int | None] = []  # each row's number of alternatives, None for no log probabilities
        self.last_logprobs: list[TokenLogprob | None] = []  # per sampled row, from the last ``sample``

    def add_row(self, params: SamplingParams, prompt_ids: list[int], matcher=None) -> None:
        seen = torch.zeros(1, self.vocab_size, dtype=torch.bool, device=self.device)
        seen[0, torch.tensor(prompt_ids, device=self.device).clamp(max=self.vocab_size - 1)] = True
        self.seen = torch.cat([self.seen, seen])
        t = torch.tensor([[params.temperature]], device=self.device)
        self.temperature = torch.cat([self.temperature, t])
        self.top_p = torch.cat([self.top_p, torch.tensor([[params.top_p]], device=self.device)])
        self.penalty = torch.cat([self.penalty, torch.tensor([[params.repetition_penalty]], device=self.device)])
        self.top_k.append(params.top_k)
        gen = None
        if params.seed is not None:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(params.seed)
        self.generators.append(gen)
        self.matchers.append(matcher)
        self.logprobs.append(params.logprobs)

    def keep_rows(self, keep: torch.Tensor) -> None:
        idx = keep.tolist()
        self.seen, self.temperature = self.seen[keep], self.temperature[keep]
        self.top_p, self.penalty = self.top_p[keep], self.penalty[keep]
        self.top_k = [self.top_k[i] for i in idx]
        self.generators = [self.generators[i] for i in idx]
        self.matchers = [self.matchers[i] for i in idx]
        self.logprobs = [self.logprobs[i] for i in idx]

    def sample(self, logits: torch.Tensor, rows: list[int] | None = None) -> torch.Tensor:
        """Next token for each row of ``logits``; ``rows`` names this sampler's row for each (default: all)."""
        idx = torch.arange(logits.shape[0]) if rows is None else torch.tensor(rows)
        logits = logits[:, : self.vocab_size].float()
        seen, temp = self.seen[idx], self.temperature[idx]
        top_p, penalty = self.top_p[idx], self.penalty[idx]

        logits = penalise(logits, seen & self.penalisable, penalty)
        row_ids = idx.tolist()
        for j, i in enumerate(row_ids):
            if self.matchers[i] is not None:
                allowed = torch.from_numpy(self.matchers[i].allowed()).to(logits.device)
                logits[j] = logits[j].masked_fill(~allowed, float("-inf"))

        out = logits.argmax(-1)
        sampled = (temp > 0).squeeze(1).nonzero().squeeze(1).tolist()
        if sampled:
            scores = logits[sampled] / temp[sampled]
            for j, i in enumerate(sampled):
                k = self.top_k[int(idx[i])]
                if 0 < k < scores.shape[-1]:
                    kth = scores[j].topk(k).values[-1]
                    scores[j] = scores[j].masked_fill(scores[j] < kth, float("-inf"))
            # Nucleus: keep the smallest set of tokens whose probability reaches top_p.
            sorted_scores, order = scores.sort(dim=-1, descending=True)
            sorted_probs = sorted_scores.softmax(-1)
            drop = (sorted_probs.cumsum(-1) - sorted_probs) >= top_p[sampled]
            scores = scores.scatter(-1, order, sorted_scores.masked_fill(drop, float("-inf")))
            probs = scores.softmax(-1)
            for j, i in enumerate(sampled):
                gen = self.generators[int(idx[i])]
                if gen is not None:  # seeded rows draw from their own generator, one at a time
                    out[i] = torch.multinomial(probs[j], 1, generator=gen)[0]
            free = [j for j, i in enumerate(sampled) if self.generators[int(idx[i])] is None]
            if free:
                out[[sampled[j] for j in free]] = torch.multinomial(probs[free], 1).squeeze(1)
        self.seen[idx, out] = True
        self.last_logprobs = [None] * len(row_ids)
        for j, i in enumerate(row_ids):
            if self.logprobs[i] is not None:
                self.last_logprobs[j] = self._logprobs(logits[j], float(temp[j]), int(out[j]), self.logprobs[i])
            if self.matchers[i] is not None and int(out[j]) not in self.exempt:
                self.matchers[i].take(int(out[j]))
        return out

    @staticmethod
    def _logprobs(logits: torch.Tensor, temperature: float, token: int, k: int) -> TokenLogprob:
        logp = (logits / (temperature if temperature > 0 else 1.0)).log_softmax(-1)
        top = logp.topk(k) if k else None
        clamp = lambda x: max(float(x), MASKED_LOGPROB)  # noqa: E731
        return TokenLogprob(token, clamp(logp[token]),
                            [(int(t), clamp(v)) for v, t in zip(top.values, top.indices)] if top else [])
