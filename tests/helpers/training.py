"""Helpers for training tests: a synthetic LIMA-format file and a tiny recipe, in seconds."""

from __future__ import annotations

import json
from pathlib import Path

QUESTIONS = ["how do i boil an egg?", "explain why the fox jumps", "what is a list of steps?",
             "please explain python code", "thanks, what then?", "how do i check the result?"]


def write_lima(path: Path, singles: int = 6, multi: int = 2) -> Path:
    """LIMA's JSONL shape with made-up text (the real data never enters the repository)."""
    rows = []
    for i in range(singles):
        q = QUESTIONS[i % len(QUESTIONS)]
        rows.append({"conversations": [q, f"first, the quick brown fox. then check the result {i}."],
                     "source": "stackexchange" if i % 2 else "wikihow"})
    for i in range(multi):
        rows.append({"conversations": ["hello, how do i boil an egg?", "put it in boiling water for nine minutes.",
                                       "thanks, and then?", "then check the result again."], "source": "multi_turn"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# Small numbers so a run takes seconds on the tiny model; every other value comes from cpu-demo.
TINY = ["lima.lima_examples=6", "sft.max_length=128", "lima.batch_size=2", "lima.small_model_batch_size=2",
        "sft.num_train_epochs=2", "lima.checkpoints.epochs=[1, 2]", "lima.checkpoints.dev_prompts=2",
        "lima.checkpoints.dev_max_new_tokens=8", "sft.bf16=false",
        # the run's model beside its parent: 2 dev prompts + 1 opener with 1 follow-up, 8 tokens each
        "lima.behaviour.dev_prompts=2", "lima.behaviour.openers=1", "lima.behaviour.follow_ups=1",
        "lima.behaviour.max_new_tokens=8", "lima.behaviour.references=2", "lima.eot_fit_tokens=2000",
        # in the training process: a process of its own costs seconds of imports, more than a tiny model's measuring
        "lima.behaviour.apart=false"]


def tiny_preset(base: Path) -> dict:
    """A user preset file's content: cpu-demo with the TINY numbers, on ``base``."""
    import yaml

    preset: dict = {"inherits": "cpu-demo", "description": "tiny test preset", "base": str(base)}
    for item in TINY:
        key, value = item.split("=", 1)
        *sections, name = key.split(".")
        node = preset
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = yaml.safe_load(value)
    return preset


def train_args(base: Path, lima: Path, variant: str = "dialogue", chains: str = "project", extra=(), **kw):
    """`lima train --variant VARIANT` on the TINY recipe, as a request."""
    from training.request import TrainRequest

    return TrainRequest(variant=variant, preset="cpu-demo", lima=str(lima), chains=chains, base=str(base),
                        overrides=[*TINY, *extra], **kw)


def stage_args(stage: str, extra=(), **kw):
    """`lima train --variant dialogue --stage STAGE` on the TINY recipe (from the registered lima-dialogue)."""
    from training.request import TrainRequest

    return TrainRequest(variant="dialogue", preset="cpu-demo", overrides=[*TINY, f"{stage}.bf16=false", *extra],
                        stage=stage, **kw)
