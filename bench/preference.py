"""Preference benchmark: the cpu-demo KTO and DPO steps against TRL's defaults, on a rated log.

    LIMA_HOME=/path/to/state python bench/preference.py [--from lima-dialogue] [--demo-log] [--max-tokens 192]

It learns from the log's current ratings, as people left them in the workbench. With ``--demo-log``
it first makes a log to learn from: it holds each of the 10 evaluation openers (the opener and its
first follow-up) with the starting model through a `lima serve` of its own, at the paper's decoding
(seeded; replies capped at ``--max-tokens``), and rates every reply by a stated rule, not a person:
Fail when it ran to the cap or repeats a line, otherwise Pass; the first and last Fail are rewritten
as their own first sentence (a crude stand-in for a person's rewrite, so DPO has pairs). The rule
exists to time the stages; it says nothing about the model.

Then, per stage, in one run:
  1. `lima train --variant dialogue --stage S --preset cpu-demo --from M`, end to end (the set,
     loading, training, saving, registering): the wall time a person waits in the Retrain tab;
  2. in process, on the same set and the same starting weights: the cpu-demo block against TRL's
     own KTOConfig / DPOConfig defaults (sharing only max_length, bf16, the seed and KTO's class
     weights): seconds in ``train()``, steps, and the reward margin over the whole set afterwards
     (TRL's evaluate: how far the policy separates desirable from undesirable replies relative to
     the starting model; 0 before training). The ratio of seconds against the cpu-demo row is the
     figure, read beside the margins.
"""

from __future__ import annotations

import argparse
import copy
import re
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm  # noqa: E402
from lima.children import lima_command


def repeats(text: str) -> bool:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return len(lines) != len(set(lines))


def first_sentence(text: str) -> str:
    match = re.match(r"\s*(.+?[.!?])(\s|$)", text, re.S)
    return (match.group(1) if match else text.strip()[:200]).strip()


def demo_log(model: str, folder: str, max_tokens: int) -> None:
    """Hold the openers with ``model``, rate every reply by the rule, rewrite two Fails (see above)."""
    from dialogues import project
    from evaluation import experiment
    from lima import conversation as conv, paper
    from lima.service_client import ServiceProblem
    from lima.store import chatlog, connect

    db = connect()
    service = experiment.serve({model: folder}, [], log_name="bench-preference-serve")
    client = service.client
    params = {k: v for k, v in paper.DECODING.items() if k != "max_tokens"} | {"max_tokens": max_tokens}
    fails = []
    try:
        for opener in tqdm(project.openers(), desc="demo log", unit="conversation"):
            chat = conv.Chat()
            seed = zlib.crc32(f"{opener.id}/{model}".encode())
            for text in (opener.message, opener.follow_ups[0]):
                try:
                    for chat in conv.send(client, chat, text, model, "bench-rule", opener.id, **params, seed=seed):
                        pass
                except ServiceProblem as problem:  # the context is full: the conversation ends there
                    tqdm.write(f"{opener.id}: {problem}")
                    break
                turn = chatlog.turn(db, chat.turn_ids[-1])
                fail = turn["finish_reason"] == "length" or repeats(turn["content"])
                chatlog.rate(db, turn["id"], "Fail" if fail else "Pass", "bench-rule")
                if fail:
                    fails.append(turn)
    finally:
        service.stop()
    for turn in {t["id"]: t for t in (fails[:1] + fails[-1:])}.values():
        chatlog.rewrite(db, turn["id"], first_sentence(turn["content"]), "bench-rule")


def timed_command(stage: str, start: str) -> tuple[float, dict]:
    from lima.store import connect
    from lima.store import runs

    began = time.perf_counter()
    result = subprocess.run([*lima_command(), "train", "--variant", "dialogue", "--stage", stage,
                             "--preset", "cpu-demo", "--from", start], capture_output=True, text=True)
    wall = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"lima train --stage {stage} failed:\n{result.stderr[-2000:]}")
    db = connect()
    return wall, runs.history(db, 1)[0]


def measure(stage: str, recipe, data, model, tokenizer) -> dict:
    """Train a copy of ``model`` with ``recipe``'s block; seconds, steps, the margin over the set."""
    from training import preference

    with tempfile.TemporaryDirectory() as out:
        trainer = preference.make_trainer(stage, recipe, data, copy.deepcopy(model), tokenizer, Path(out), [])
        trainer.args.disable_tqdm = True
        began = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - began
        scores = trainer.evaluate(eval_dataset=trainer.train_dataset)
    return {"seconds": seconds, "steps": trainer.state.global_step,
            "margin": scores.get("eval_rewards/margins"), "loss": scores.get("eval_loss")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="start", default="lima-dialogue", help="the registered model to start from")
    parser.add_argument("--demo-log", action="store_true", help="first hold and rate the openers by the rule")
    parser.add_argument("--max-tokens", type=int, default=192, help="reply cap for --demo-log")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dialogues import preferences
    from lima.store import connect
    from lima.store.registry import registered
    from training import common, preference, recipe as recipes

    folder = registered(connect()).get(args.start)
    if folder is None:
        raise SystemExit(f"no model named {args.start!r} is registered here: train it first "
                         "(lima train --variant dialogue --preset cpu-demo)")
    if args.demo_log:
        demo_log(args.start, folder, args.max_tokens)
    recipe = recipes.load("cpu-demo")
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = {}
    for stage in preferences.STAGES:
        data = preference.build_set(connect(), recipe, stage, preferences.Filters())
        print(f"\n{stage.upper()} set: {data.summary().replace('**', '')}", flush=True)
        wall, record = timed_command(stage, args.start)
        print(f"lima train --stage {stage} --preset cpu-demo: {wall / 60:.1f} min wall time, "
              f"{record.max_steps} steps, run {record.id}", flush=True)
        block = preference.trainer_block(stage, recipe, data)
        shared = {k: block[k] for k in ("max_length", "bf16", "seed", "desirable_weight", "undesirable_weight")
                  if k in block}
        shared["bf16"] = shared.get("bf16", False) and common.bf16_ok("cpu")
        defaults = recipe.model_copy(update={stage: shared})
        ours = recipe.model_copy(update={stage: {**block, "bf16": shared["bf16"]}})
        rows[stage] = (wall, [("cpu-demo", measure(stage, ours, data, model, tokenizer)),
                              (f"TRL {stage.upper()}Config defaults", measure(stage, defaults, data, model, tokenizer))])

    print(f"\n{'stage':5} {'setup':26} {'train s':>8} {'steps':>6} {'vs cpu-demo':>12} {'margin after':>13}")
    for stage, (wall, results) in rows.items():
        baseline = results[0][1]["seconds"]
        for name, r in results:
            margin = f"{r['margin']:.3f}" if r["margin"] is not None else "n/a"
            print(f"{stage:5} {name:26} {r['seconds']:>8.1f} {r['steps']:>6} {r['seconds'] / baseline:>12.2f} "
                  f"{margin:>13}")
        print(f"{stage:5} {'lima train, end to end':26} {wall:>8.1f}")


if __name__ == "__main__":
    main()
