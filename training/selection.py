"""Checkpoint selection with a development set (paper, section 3).

The paper keeps the checkpoints of epochs 5 to 10 and picks one with a 50-prompt development set,
because perplexity does not track generation quality. Its dev prompts are not public: ours are
``training/dev_prompts.jsonl``, 50 short everyday requests written for this project, disjoint from
the evaluation openers and the training chains. For each kept checkpoint the first
``checkpoints.dev_prompts`` of them are answered with the paper's decoding and stored in the run's
``dev_generations``, decoded as the service decodes (the recipe's decoding, by default the paper's,
with the stop tokens exempt from the repetition penalty). With a judge configured (any
OpenAI-compatible URL), each answer gets a 1-6
helpfulness score and the best mean wins (ties go to the later epoch); without one, the last
epoch of the window is chosen and the generations wait for a person to rate them in the UI.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from evaluation.judge import Judge
from lima.chat_format import stop_token_ids
from lima.repetition_penalty import ExemptStopsPenalty
from lima.store import runs

log = logging.getLogger("lima.selection")

DEV_PROMPTS = Path(__file__).resolve().parent / "dev_prompts.jsonl"


@dataclass
class Candidate:
    epoch: int
    path: Path
    mean_score: float | None = None


def dev_prompts(n: int) -> list[dict]:
    rows = [json.loads(line) for line in DEV_PROMPTS.read_text().splitlines() if line.strip()]
    return rows[:n]


@torch.inference_mode()
def answer(model, tokenizer, prompts: list[str], max_new_tokens: int, decoding, seed: int = 0) -> list[str]:
    """Answers with ``decoding`` (a recipe's ``lima.decoding``), batched with left padding."""
    torch.manual_seed(seed)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                           tokenize=False) for p in prompts]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    tokenizer.padding_side = side
    greedy = decoding.temperature == 0
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=not greedy,
                         temperature=None if greedy else decoding.temperature,
                         top_p=None if greedy else decoding.top_p, pad_token_id=tokenizer.pad_token_id,
                         logits_processor=[ExemptStopsPenalty(decoding.repetition_penalty,
                                                              stop_token_ids(model, tokenizer))])
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def select(db, run_id: str, candidates: list[Candidate], load, checkpoints, decoding,
           judge: Judge | None) -> tuple[Candidate, str]:
    """(chosen checkpoint, how it was chosen); ``load(path) -> (model, tokenizer)``;
    ``checkpoints`` and ``decoding`` are the recipe's ``lima.checkpoints`` and ``lima.decoding``."""
    prompts = dev_prompts(checkpoints.dev_prompts)
    if prompts:
        for candidate in candidates:
            model, tokenizer = load(candidate.path)
            outputs = answer(model, tokenizer, [p["prompt"] for p in prompts], checkpoints.dev_max_new_tokens,
                             decoding)
            del model
            scores = []
            for prompt, output in zip(prompts, outputs):
                score, raw = judge.helpfulness(prompt["prompt"], output) if judge else (None, None)
                if score is not None:
                    scores.append(score)
                runs.add_dev_generation(db, runs.DevGeneration(
                    run_id, candidate.path.name, candidate.epoch, prompt["id"], prompt["prompt"], output, score, raw))
            candidate.mean_score = sum(scores) / len(scores) if scores else None
            log.info("epoch %d: %d dev answers, judge mean %s", candidate.epoch, len(outputs), candidate.mean_score)
    judged = [c for c in candidates if c.mean_score is not None]
    if judge and judged:
        best = max(judged, key=lambda c: (c.mean_score, c.epoch))
        return best, f"judge {judge.model}: mean helpfulness {best.mean_score:.2f} of 6 on {len(prompts)} dev prompts"
    return candidates[-1], "last epoch of the window (no judge configured; dev answers kept for rating in the UI)"
