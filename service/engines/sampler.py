"""A batched sampler with one setting per row.

transformers' logits processors take one temperature/top-p/penalty for the whole batch; the
engine batches requests that each chose their own, so this applies them row-wise in a few
vectorised tensor operations (same definitions as transformers' warpers).

The repetition penalty is ``lima.repetition_penalty``'s: the tokens that end a turn are exempt.

A row may be guided to a choice of replies (vLLM's ``guided_choice``): each step only the tokens
that continue one of the choices' token sequences are allowed, and a stop token once a choice is
complete, so the reply is exactly one of them, the one the model ranks highest token by token.
"""

from __future__ import annotations

import torch

from lima.repetition_penalty import penalise
from service.sampling import SamplingParams


class BatchSampler:
    """Holds the per-row settings of the current batch; rows are added and removed with the batch."""

    def __init__(self, vocab_size: int, device: torch.device, exempt: set[int] | frozenset[int] = frozenset()):
        self.vocab_size, self.device = vocab_size, device
        # tokens never penalised for having been seen: the stop tokens
        self.penalisable = torch.ones(vocab_size, dtype=torch.bool, device=device)
        self.penalisable[[i for i in exempt if 0 <= i < vocab_size]] = False
        self.temperature = torch.empty(0, 1, device=device)
        self.top_p = torch.empty(0, 1, device=device)
        self.top_k: list[int] = []
        self.penalty = torch.empty(0, 1, device=device)
        self.seen = torch.empty(0, vocab_size, dtype=torch.bool, device=device)
        self.generators: list[torch.Generator | None] = []
        self.stop_id = min(exempt) if exempt else None
        # guided rows: (the choices' token ids, the tokens this row has produced so far)
        self.guides: list[tuple[list[list[int]], list[int]] | None] = []

    def add_row(self, params: SamplingParams, prompt_ids: list[int], choice_ids: list[list[int]] | None = None) -> None:
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
        self.guides.append((choice_ids, []) if choice_ids else None)

    def keep_rows(self, keep: torch.Tensor) -> None:
        idx = keep.tolist()
        self.seen, self.temperature = self.seen[keep], self.temperature[keep]
        self.top_p, self.penalty = self.top_p[keep], self.penalty[keep]
        self.top_k = [self.top_k[i] for i in idx]
        self.generators = [self.generators[i] for i in idx]
        self.guides = [self.guides[i] for i in idx]

    def sample(self, logits: torch.Tensor, rows: list[int] | None = None) -> torch.Tensor:
        """Next token for each row of ``logits``; ``rows`` names this sampler's row for each (default: all)."""
        idx = torch.arange(logits.shape[0]) if rows is None else torch.tensor(rows)
        logits = logits[:, : self.vocab_size].float()
        seen, temp = self.seen[idx], self.temperature[idx]
        top_p, penalty = self.top_p[idx], self.penalty[idx]

        logits = penalise(logits, seen & self.penalisable, penalty)
        for j, i in enumerate(idx.tolist()):
            if self.guides[i] is not None:
                logits[j] = self._guided(logits[j], *self.guides[i])

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
        for j, i in enumerate(idx.tolist()):
            if self.guides[i] is not None:
                self.guides[i][1].append(int(out[j]))
        return out

    def _guided(self, logits: torch.Tensor, choices: list[list[int]], done: list[int]) -> torch.Tensor:
        """``logits`` with every token masked but those that continue a choice (or end a complete one)."""
        n = len(done)
        allowed = {c[n] for c in choices if len(c) > n and c[:n] == done}
        if any(c == done for c in choices) and self.stop_id is not None:
            allowed.add(self.stop_id)
        if not allowed:  # cannot happen while rows only take allowed tokens; never mask everything
            return logits
        keep = torch.full_like(logits, float("-inf"))
        ids = torch.tensor(sorted(allowed), dtype=torch.long, device=logits.device)
        keep[ids] = logits[ids]
        return keep
