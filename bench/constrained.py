"""Constrained decoding benchmark: what a JSON schema or a guided choice costs per token.

    python bench/constrained.py [--model PATH] [--tokens 64] [--prompts 4]

On the embedded model (or ``--model``) in the service's own engine (CPU default: float16 weights,
the lean decoder), in one run: the same prompts decoded greedily without a constraint, with
``response_format`` json_object, with a JSON schema, and with a guided choice. For each: decode
tokens/s, the milliseconds per token spent computing llguidance's mask (timed inside the
sampler), and the time to the first token (which, constrained, includes checking the grammar
and computing its first mask). Read the ratios against the unconstrained row: this machine is noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from service.engines import constraints
from service.engines.transformers_engine import TransformersEngine
from service.sampling import SamplingParams

PROMPTS = ["Describe a city you would like to visit, as JSON.",
           "Give me a recipe for pancakes as JSON.",
           "What are three facts about the moon? Answer in JSON.",
           "Summarise the plot of a famous novel in JSON.",
           "List the planets of the solar system with one fact each, as JSON.",
           "Plan a day of sightseeing in Rome as JSON."]

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["title", "items", "rating"],
          "properties": {"title": {"type": "string"}, "rating": {"enum": ["Fail", "Pass", "Excellent"]},
                         "items": {"type": "array", "items": {"type": "string"}}}}

CASES = {
    "unconstrained": {},
    "json_object": {"json_schema": json.dumps({"type": "object"})},
    "json_schema": {"json_schema": json.dumps(SCHEMA)},
    "guided_choice": {"choices": ("Fail", "Pass", "Excellent")},
}


class MaskTimer:
    """Times every mask computation (``constraints.Matcher.allowed``) while installed."""

    def __init__(self):
        self.seconds, self.calls = 0.0, 0
        self.original = constraints.Matcher.allowed

    def __enter__(self):
        timer = self

        def timed(matcher):
            start = time.perf_counter()
            try:
                return timer.original(matcher)
            finally:
                timer.seconds += time.perf_counter() - start
                timer.calls += 1

        constraints.Matcher.allowed = timed
        return self

    def __exit__(self, *exc):
        constraints.Matcher.allowed = self.original


async def one(engine, prompt: str, params: SamplingParams) -> tuple[int, float, float]:
    """(tokens, seconds to the first token, seconds in all) for one greedy reply."""
    start = time.perf_counter()
    prepared = await engine.prepare("base", [{"role": "user", "content": prompt}], params)
    first, tokens = None, 0
    async for delta in engine.stream(prepared):
        first = first or time.perf_counter()
        tokens = delta.completion_tokens or tokens
    return tokens, first - start, time.perf_counter() - start


async def main(args) -> None:
    from lima import embedded_model

    engine = TransformersEngine(device="cpu")
    await engine.add_model("base", args.model or str(embedded_model.prepare()))
    await one(engine, "warm up", SamplingParams(max_tokens=8, temperature=0))
    rows = {}
    for name, constraint in CASES.items():
        params = SamplingParams(temperature=0, repetition_penalty=1.0, max_tokens=args.tokens, **constraint)
        with MaskTimer() as masks:
            runs = [await one(engine, p, params) for p in PROMPTS[: args.prompts]]
        tokens = sum(r[0] for r in runs)
        decode = sum(r[2] - r[1] for r in runs)
        rows[name] = {"tokens": tokens, "tok_s": (tokens - len(runs)) / decode if decode else float("nan"),
                      "ttft_ms": 1000 * statistics.median(r[1] for r in runs),
                      "mask_ms": 1000 * masks.seconds / masks.calls if masks.calls else 0.0}
    await engine.close()
    base = rows["unconstrained"]
    print(f"\n{'constraint':<15} {'tokens':>7} {'decode tok/s':>13} {'vs none':>8} {'mask ms/token':>14} "
          f"{'1st token ms':>13}")
    for name, row in rows.items():
        print(f"{name:<15} {row['tokens']:>7} {row['tok_s']:>13.1f} {row['tok_s'] / base['tok_s']:>7.2f}x "
              f"{row['mask_ms']:>14.2f} {row['ttft_ms']:>13.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model folder (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--tokens", type=int, default=64, help="at most this many tokens per reply")
    parser.add_argument("--prompts", type=int, default=4, help="how many prompts per constraint (at most 6)")
    asyncio.run(main(parser.parse_args()))
