"""A trained model's own behaviour, measured beside the model it started from, at the end of every run.

A run is only as good as the model it leaves. Every ``lima train`` (SFT and the KTO/DPO stages)
ends by holding the same prompts with its parent (the base, or the model a preference stage
started from) and with its new model, none of which it trained on:

  - the first ``lima.behaviour.dev_prompts`` development prompts (``training/dev_prompts.jsonl``)
  - the first ``lima.behaviour.openers`` evaluation openers as conversations, each followed by its
    first ``follow_ups`` scripted follow-ups, the model's own replies in between

at the recipe's decoding (the paper's: temperature 0.7, top-p 0.9, repetition penalty 1.2 with stop
tokens exempt), each reply seeded, capped at ``max_new_tokens``, through the service's own
transformers engine, so the figures are what a person chatting with the model would meet:

  ended          share of replies that ended by themselves (a stop token before the cap)
  median, p90    reply length in tokens
  loops          share of replies with a repeated-text loop (a run of 8 words back 3 or more times)
  P(end), P(EOT) mean probability, under the model's own chat template, of ending the turn (any of
                 its stop tokens) and of the EOT token itself right where a held-out reference
                 answer ends: LIMA rows and dialogue chains the model was not trained on
  judge          mean 1-6 helpfulness, when a judge is configured

A parent already measured with the same settings (same folder, prompts and references) is not
measured again. A new model clearly worse than its parent (``regressions``) is still registered,
with the reasons as a warning on its run and in every model list.

    lima runs show RUN          # the figures of a run, parent beside model, and a chart
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
import time
from dataclasses import dataclass

from tqdm import tqdm

from dialogues import project
from dialogues.schema import Example
from lima import chat_format
from lima.store import behaviour as store
from lima.store.behaviour import Figures, Reply

log = logging.getLogger("lima.behaviour")

# "Clearly worse": each threshold is far outside what reseeding the same model moves (on the
# embedded model, 40 replies: ended within 5 points, median within 15%).
WORSE_ENDED = 0.10  # ends by itself 10 points less often
WORSE_LENGTH = 2.0  # median length more than twice the parent's
WORSE_LOOPS = 0.10  # loops 10 points more often
WORSE_P_END = 0.5  # ends where a reference answer ends with less than half the parent's probability
WORSE_JUDGE = 0.5  # judge's mean helpfulness half a point (of 6) lower

LOOP_WORDS, LOOP_TIMES = 8, 3


class Cancelled(Exception):
    """The run was cancelled while its model was being measured."""


def has_loop(text: str, words: int = LOOP_WORDS, times: int = LOOP_TIMES) -> bool:
    """True when some run of ``words`` words comes back ``times`` times or more."""
    tokens = re.findall(r"\w+", text.lower())
    seen: dict[tuple[str, ...], int] = {}
    for i in range(len(tokens) - words + 1):
        gram = tuple(tokens[i:i + words])
        seen[gram] = seen.get(gram, 0) + 1
        if seen[gram] >= times:
            return True
    return False


def summarise(replies: list[Reply], ends: list[tuple[float, float | None]], max_new_tokens: int) -> Figures:
    """The figures of a set of replies and of the end probabilities at the references."""
    import numpy as np

    n = len(replies)
    lengths = [r.tokens for r in replies]
    scores = [r.judge_score for r in replies if r.judge_score is not None]
    eots = [e for _, e in ends if e is not None]
    return Figures(
        replies=n, ended=sum(r.ended for r in replies) / n if n else None,
        median_tokens=float(np.median(lengths)) if n else None,
        p90_tokens=float(np.percentile(lengths, 90)) if n else None,
        loops=sum(r.loop for r in replies) / n if n else None,
        references=len(ends), p_end=sum(p for p, _ in ends) / len(ends) if ends else None,
        p_eot=sum(eots) / len(eots) if eots else None,
        judge_mean=sum(scores) / len(scores) if scores else None, judged=len(scores),
        max_new_tokens=max_new_tokens)


def regressions(parent: Figures, model: Figures) -> list[str]:
    """Why ``model`` is clearly worse than ``parent``, one phrase per figure (empty: it is not)."""
    out = []
    if parent.ended is not None and model.ended is not None and model.ended < parent.ended - WORSE_ENDED:
        out.append(f"ends {model.ended:.0%} of its replies by itself, its parent {parent.ended:.0%}")
    if parent.median_tokens and model.median_tokens and model.median_tokens > WORSE_LENGTH * parent.median_tokens:
        out.append(f"median reply {model.median_tokens:.0f} tokens, its parent's {parent.median_tokens:.0f}")
    if parent.loops is not None and model.loops is not None and model.loops > parent.loops + WORSE_LOOPS:
        out.append(f"loops in {model.loops:.0%} of its replies, its parent in {parent.loops:.0%}")
    if parent.p_end and model.p_end is not None and model.p_end < WORSE_P_END * parent.p_end:
        out.append(f"P(end of turn) at the end of reference answers {model.p_end:.2f}, its parent's {parent.p_end:.2f}")
    if parent.judge_mean is not None and model.judge_mean is not None \
            and model.judge_mean < parent.judge_mean - WORSE_JUDGE:
        out.append(f"judge's mean {model.judge_mean:.2f} of 6, its parent's {parent.judge_mean:.2f}")
    return out


# -- what is measured ---------------------------------------------------------------------------------

@dataclass
class Plan:
    """The prompts, references and decoding of a measurement; ``key`` names it for reuse."""

    dev: list[dict]
    openers: list  # dialogues.schema.Opener
    follow_ups: int
    references: list[Example]
    max_new_tokens: int
    decoding: dict
    seed: int
    max_batch: int
    apart: bool = True  # measured in a process of its own (not part of what is measured: not in ``key``)

    @property
    def key(self) -> str:
        what = {"dev": self.dev, "openers": [[o.id, o.message, *o.follow_ups[:self.follow_ups]] for o in self.openers],
                "references": [r.as_openai() for r in self.references], "max_new_tokens": self.max_new_tokens,
                "decoding": self.decoding, "seed": self.seed}
        return hashlib.sha256(json.dumps(what, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    @property
    def size(self) -> int:
        return len(self.dev) + len(self.openers) * (1 + self.follow_ups)


def held_out(pool: list[Example], trained_ids: set[str], n: int, seed: int) -> list[Example]:
    """``n`` reference conversations (a seeded pick, in pool order) the model was not trained on."""
    left = [e for e in pool if e.id not in trained_ids]
    if len(left) <= n:
        return left
    keep = sorted(random.Random(seed).sample(range(len(left)), n))
    return [left[i] for i in keep]


def reference_pool(lima) -> list[Example]:
    """What references are drawn from: LIMA's rows (when at hand) and the project's chains."""
    return ([*lima.single, *lima.multi] if lima is not None else []) + project.chains()


def plan(recipe, references: list[Example]) -> Plan:
    from training.selection import dev_prompts

    settings = recipe.lima.behaviour
    return Plan(dev=dev_prompts(settings.dev_prompts), openers=project.openers()[:settings.openers],
                follow_ups=settings.follow_ups, references=references, max_new_tokens=settings.max_new_tokens,
                decoding=recipe.lima.decoding.model_dump(), seed=settings.seed, max_batch=settings.max_batch,
                apart=settings.apart)


# -- measuring ----------------------------------------------------------------------------------------

def end_probabilities(model, tokenizer, references: list[Example], max_tokens: int) -> list[tuple[float, float | None]]:
    """(P(any stop token), P(EOT) or None) right after each assistant turn of ``references``, each
    turn rendered with the model's own chat template after the conversation before it. Turns whose
    text would pass ``max_tokens`` are left out.

    One forward pass per conversation reads every turn's end: a turn's prompt and answer are the
    start of the whole conversation's tokens (the template ends each answer with a special token,
    so tokenising stops at the same place). A turn where that does not hold gets its own pass."""
    import torch

    stops = sorted(chat_format.stop_token_ids(model, tokenizer))
    eot = tokenizer.convert_tokens_to_ids(chat_format.EOT)
    has_eot = chat_format.EOT in tokenizer.get_vocab()

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids

    def last_logits(ids: list[int]):
        with torch.inference_mode():
            return model(torch.tensor([ids], device=model.device)).logits[0].float()

    out = []
    for reference in references:
        messages = reference.as_openai()
        turns = []  # the token ids up to the end of each assistant answer
        for k, message in enumerate(messages):
            if message["role"] == "assistant":
                prefix = tokenizer.apply_chat_template(messages[:k], add_generation_prompt=True, tokenize=False)
                ids = encode(prefix + message["content"])
                if len(ids) > max_tokens:
                    break  # later turns are longer still
                turns.append(ids)
        if not turns:
            continue
        whole = turns[-1]
        logits = last_logits(whole)
        for ids in turns:
            here = logits[len(ids) - 1] if whole[:len(ids)] == ids else last_logits(ids)[-1]
            probs = here.softmax(-1)
            out.append((float(probs[stops].sum()), float(probs[eot]) if has_eot else None))
    return out


def conversation_text(messages: list[dict]) -> str:
    """A conversation as the judge's helpfulness question reads it."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"[{m['role'].capitalize()}]\n{m['content']}" for m in messages)


async def _hold(engine, name: str, the_plan: Plan, tick) -> list[Reply]:
    """Every reply of ``the_plan``, all at once (the engine batches them); ``tick(n)`` as n are done."""
    from service.engines.base import PromptTooLong
    from service.sampling import SamplingParams

    decoding = the_plan.decoding

    async def reply(messages: list[dict], seed: int) -> tuple[str, int, bool] | None:
        params = SamplingParams(temperature=decoding["temperature"], top_p=decoding["top_p"],
                                repetition_penalty=decoding["repetition_penalty"],
                                max_tokens=the_plan.max_new_tokens, seed=seed)
        try:
            prepared = await engine.prepare(name, messages, params)
        except PromptTooLong:  # the conversation has filled the context: it ends here
            return None
        text, last = [], None
        async for delta in engine.stream(prepared):
            text.append(delta.text)
            last = delta
        tick(1)
        return "".join(text), last.completion_tokens, last.finish_reason == "stop"

    def made(source, prompt_id, turn, prompt, got) -> Reply:
        text, tokens, ended = got
        return Reply(source, prompt_id, turn, prompt, text, tokens, ended, has_loop(text))

    async def dev(i: int, row: dict) -> list[Reply]:
        got = await reply([{"role": "user", "content": row["prompt"]}], the_plan.seed + i)
        return [made("dev", row["id"], 0, row["prompt"], got)] if got else []

    async def conversation(i: int, opener) -> list[Reply]:
        messages, out = [], []
        for turn, text in enumerate([opener.message, *opener.follow_ups[:the_plan.follow_ups]]):
            messages.append({"role": "user", "content": text})
            got = await reply(list(messages), the_plan.seed + 1000 * (i + 1) + turn)
            if got is None:
                tick(the_plan.follow_ups + 1 - turn)
                break
            out.append(made("opener", opener.id, turn, conversation_text(messages), got))
            messages.append({"role": "assistant", "content": got[0]})
        return out

    groups = await asyncio.gather(*[dev(i, row) for i, row in enumerate(the_plan.dev)],
                                  *[conversation(i, o) for i, o in enumerate(the_plan.openers)])
    return [r for group in groups for r in group]


def measure(name: str, path: str, the_plan: Plan, device: str, judge=None,
            progress=lambda done, total: None) -> tuple[Figures, list[Reply]]:
    """Hold ``the_plan`` with the model in ``path``; its figures and replies."""
    import torch

    from service.engines.transformers_engine import TransformersEngine, load_model

    started = time.monotonic()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32

    def reference_ends():
        model, tokenizer = load_model(name, path, device, dtype)  # as served: without a template, LIMA's
        context = getattr(model.config.get_text_config(), "max_position_embeddings", None) or 2048
        return end_probabilities(model, tokenizer, the_plan.references, min(context, 4096))

    # Transformers' forward with the service's weights, not the compiled decoder: the same answers
    # (fp16 weights, float32 arithmetic) without a minute of compiling for a new model shape.
    engine = TransformersEngine(device=device, max_batch=the_plan.max_batch, cpu_decoder="forward")
    with tqdm(total=the_plan.size, desc=f"measuring {name}", unit="reply") as bar:
        def tick(n: int) -> None:
            bar.update(n)
            progress(bar.n, bar.total)

        async def run() -> tuple[list, list[Reply]]:
            try:
                # Every torch operation on the engine's one compute thread: torch work on a second
                # thread (here, the references) leaves an OpenMP team beside the engine's, and
                # decoding on two CPU cores then runs about 45% slower (measured: 139 s, not 96 s).
                ends = await asyncio.wrap_future(engine.compute.call(reference_ends))
                await engine.add_model(name, path)
                return ends, await _hold(engine, name, the_plan, tick)
            finally:
                await engine.close()

        ends, replies = asyncio.run(run())
    if judge is not None:
        client = judge.client()
        for r in replies:
            r.judge_score, _ = judge.helpfulness(r.prompt, r.text, client)
    figures = summarise(replies, ends, the_plan.max_new_tokens)
    figures.seconds = round(time.monotonic() - started, 1)
    return figures, replies


def line(figures: Figures) -> str:
    """One model's figures in a line."""
    if not figures.replies:
        return "no replies measured"
    text = (f"ends {figures.ended:.0%} by itself, median {figures.median_tokens:.0f} tokens (p90 "
            f"{figures.p90_tokens:.0f}, cap {figures.max_new_tokens}), loops {figures.loops:.0%}")
    if figures.p_end is not None:
        text += f", P(end) {figures.p_end:.2f}"
    if figures.p_eot is not None:
        text += f", P(EOT) {figures.p_eot:.2f}"
    if figures.judge_mean is not None:
        text += f", judge {figures.judge_mean:.2f}"
    references = f", {figures.references} reference turns" if figures.references else ""
    return text + f" ({figures.replies} replies{references})"


def measure_run(db, run_id: str, parent: tuple[str, str], model: tuple[str, str], the_plan: Plan,
                device: str, judge=None) -> list[str]:
    """Measure the run's new model and its parent (reusing an earlier measurement of the parent),
    store both with the run, and return the regressions (empty when the new model is not worse)."""
    from lima.store import runs

    key = the_plan.key
    if the_plan.size == 0 and not the_plan.references:
        return []
    measured = {}
    for role, (name, path) in (("parent", parent), ("model", model)):
        earlier = store.find(db, path, key)
        if earlier is not None:
            store.save(db, run_id, role, name, path, key, earlier.figures, measured_in=earlier.measured_in)
            measured[role] = earlier.figures
            print(f"{role} {name}: measured before in run {earlier.measured_in}: {line(earlier.figures)}", flush=True)
            continue
        what = f"measuring {'the parent' if role == 'parent' else 'the new model'} {name}"
        runs.update(db, run_id, activity=f"{what}: 0 of {the_plan.size} replies")

        def progress(done: int, total: int, what=what) -> None:
            if runs.cancel_requested(db, run_id):
                raise Cancelled(f"cancelled after {done} of {total} replies")
            runs.update(db, run_id, activity=f"{what}: {done} of {total} replies")

        figures, replies = measure(name, path, the_plan, device, judge, progress)
        store.save(db, run_id, role, name, path, key, figures, replies)
        measured[role] = figures
        print(f"{role} {name}: {line(figures)}", flush=True)
    runs.update(db, run_id, activity=None)
    return regressions(measured["parent"], measured["model"])

