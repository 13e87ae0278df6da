"""End-of-turn benchmark: where the new EOT token starts, and what the retrained model does with it.

    LIMA_DATASET=../shared/lima/train.jsonl .venv/bin/python bench/end_of_turn.py [--inits end-token mean]
        [--preset cpu-demo] [--max-steps N] [--home DIR]

For each start of the EOT token's rows (``lima.eot_init``: ``fitted``, a copy of the base's own end
of turn with its output row fitted to the data and refitted at each epoch's end; ``end-token``, the
copy alone; ``mean``, transformers' mean resizing) it runs the real ``lima train --variant
dialogue`` (one process each, one state folder, so the base is measured once) and prints, beside
the base: the probability of EOT where the answers it trained on end, and the run's own behaviour
figures (``training/behaviour.py``: replies that end by themselves over the development prompts and
the opener conversations, median and 90th percentile length, loops, P(end of turn) and P(EOT) at the
end of held-out reference answers), with the time each run took (the first one also measures the
base; the others reuse that).

One seed of 40 sampled replies moves the share that ends by ten points either way, so
``--seeds 1 2`` holds the same prompts again with those seeds, with the base and every new model,
and prints the shares over all seeds (and on the opener conversations alone) beside the first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lima.children import lima_command  # noqa: E402


def trained_answers_eot(model_path: str, preset: str, lima: str) -> tuple[float, float, int]:
    """(mean, median) P(EOT) right after every assistant turn the run trained on, and how many turns."""
    import statistics

    import torch

    from dialogues import lima_data
    from training import behaviour, recipe as recipes, sft
    from service.engines.transformers_engine import load_model

    recipe = recipes.load(preset)
    dataset = sft.build_dataset(recipe, "dialogue", lima_data.load(lima), "project")
    model, tokenizer = load_model("trained", model_path, "cpu", torch.float32)
    ends = behaviour.end_probabilities(model, tokenizer, dataset.examples, recipe.max_length)
    eots = [e for _, e in ends]
    return sum(eots) / len(eots), statistics.median(eots), len(eots)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inits", nargs="+", default=["fitted", "end-token", "mean"])
    parser.add_argument("--preset", default="cpu-demo")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--lima", default=os.environ.get("LIMA_DATASET"))
    parser.add_argument("--home", help="state folder for the runs (default: a new temporary one)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more recipe overrides")
    parser.add_argument("--seeds", nargs="*", type=int, default=[],
                        help="more behaviour seeds: each model holds the prompts again with each (noise)")
    args = parser.parse_args()
    if not args.lima:
        parser.error("give --lima or set LIMA_DATASET to LIMA's train.jsonl")
    home = Path(args.home or tempfile.mkdtemp(prefix="lima-eot-bench-"))
    env = {**os.environ, "LIMA_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    os.environ["LIMA_HOME"] = str(home)
    from lima.store import behaviour as store, connect
    from lima.store import runs

    # the embedded base is prepared first, so no run's time includes it (as under `lima up`)
    subprocess.run([*lima_command(), "models", "prepare"], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    results = []
    for init in args.inits:
        cmd = [*lima_command(), "train", "--variant", "dialogue", "--preset", args.preset,
               "--lima", args.lima, "--set", f"lima.eot_init={init}", *sum((["--set", s] for s in args.set), [])]
        if args.max_steps:
            cmd += ["--max-steps", str(args.max_steps)]
        print(f"== {init}: {' '.join(cmd[2:])}", flush=True)
        started = time.monotonic()
        log = home / f"train-{init}.log"
        with open(log, "wb") as out:
            code = subprocess.call(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        seconds = time.monotonic() - started
        if code != 0:
            print(f"   failed ({code}); see {log}")
            continue
        db = connect()
        run = runs.history(db, 1)[0]
        measured = store.for_run(db, run.id)
        mean, median, turns = trained_answers_eot(run.model_path, args.preset, args.lima)
        results.append((init, seconds, run, measured, mean, median, turns))

    print(f"\nstate: {home}; preset {args.preset}" + (f", {args.max_steps} steps" if args.max_steps else ""))
    print("| EOT starts as | run s | P(EOT) trained answers, mean / median | ended | median / p90 tokens | loops "
          "| held-out P(end) / P(EOT) |")
    print("|---|---|---|---|---|---|---|")
    if results:
        base = results[0][3]["parent"].figures
        print(f"| base ({results[0][3]['parent'].model}) | — | — | {base.ended:.0%} | {base.median_tokens:.0f} / "
              f"{base.p90_tokens:.0f} | {base.loops:.0%} | {base.p_end:.3f} / n/a |")
    for init, seconds, run, measured, mean, median, turns in results:
        f = measured["model"].figures
        print(f"| {init} | {seconds:.0f} | {mean:.3f} / {median:.3f} ({turns} turns) | {f.ended:.0%} | "
              f"{f.median_tokens:.0f} / {f.p90_tokens:.0f} | {f.loops:.0%} | {f.p_end:.3f} / {f.p_eot:.3f} |")
    if results:
        print(f"\n{results[0][3]['model'].figures.replies} replies per model at most "
              f"{results[0][3]['model'].figures.max_new_tokens} new tokens; "
              f"{results[0][3]['model'].figures.references} held-out reference turns")
    if results and args.seeds:
        print(more_seeds(args, results, connect()))
    return 0


def more_seeds(args, results, db) -> str:
    """The base and each new model hold the run's prompts again with each of ``args.seeds``; a table
    of the shares that ended over every seed, the first (the run's own) included."""
    from lima.store import behaviour as store
    from training import behaviour, recipe as recipes

    first = results[0][3]
    models = [("base", first["parent"])] + [(init, measured["model"]) for init, _, _, measured, *_ in results]
    recipe = recipes.load(args.preset, args.set)
    seeds = [recipe.lima.behaviour.seed, *args.seeds]
    lines = [f"\n| model | ended, seeds {', '.join(map(str, seeds))} | all seeds | opener conversations | median tokens |",
             "|---|---|---|---|---|"]
    for name, measured in models:
        rounds = [store.replies(db, measured)]
        for seed in args.seeds:
            the_plan = behaviour.plan(recipe, [])
            the_plan.seed = seed
            rounds.append(behaviour.measure(name, measured.path, the_plan, "cpu")[1])
        every = [r for replies in rounds for r in replies]
        openers = [r for r in every if r.source == "opener"]
        medians = [statistics.median(r.tokens for r in replies) for replies in rounds]
        lines.append(f"| {name} | {' / '.join(f'{sum(r.ended for r in rs) / len(rs):.0%}' for rs in rounds)} | "
                     f"{sum(r.ended for r in every)} of {len(every)} ({sum(r.ended for r in every) / len(every):.0%}) | "
                     f"{sum(r.ended for r in openers)} of {len(openers)} | "
                     f"{' / '.join(f'{m:.0f}' for m in medians)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
