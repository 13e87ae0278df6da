"""Training benchmark on the embedded model: the cpu-demo preset against TRL's defaults.

    LIMA_DATASET=/path/to/lima/train.jsonl python bench/train.py [--examples 16] [--rounds 3] [--skip-full]

In one run, on the same cpu-demo dialogue examples and the same max length, each setup trains
from the same starting weights for ``--examples`` examples and reports real (non-padding)
tokens per second, after one warm-up step:
  - cpu-demo:        one example per forward pass (no padding), no activation checkpointing, and on
                     a CPU the LM head of ``training/cpu_head.py`` (one GEMM over the labelled positions)
  - cpu-demo, TRL's chunked head: the same with the head TRL uses everywhere (what cpu-demo ran before)
  - TRL defaults:    batches of 8 padded to the longest, activation checkpointing on
  - TRL packing:     TRL's default batch with packing (where it runs on this machine)
The two cpu-demo setups run in turn for ``--rounds`` rounds (this machine is noisy; the median is the
figure) and their per-step losses are printed side by side: the same examples in the same order, so
the curves differ only by rounding. The ratio against the cpu-demo row is the figure. Then (unless
--skip-full) the full cpu-demo dialogue retrain runs as `lima train` would, and its wall time is
printed. About 15 minutes with --skip-full, 25 with the retrain (3 rounds, 16 examples).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import TrainerCallback  # noqa: E402
from lima.children import lima_command


class Clock(TrainerCallback):
    """Real tokens and time from the end of the first (warm-up) step to the end of training.
    TRL logs ``num_tokens``, the running count of non-padding tokens, after each step."""

    def __init__(self):
        self.start = self.end = self.first_tokens = None
        self.tokens = 0.0
        self.losses: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.end = time.perf_counter()
        self.start = self.start or self.end

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))
        if logs and "num_tokens" in logs:
            self.tokens = float(logs["num_tokens"])
            self.first_tokens = self.first_tokens if self.first_tokens is not None else self.tokens

    def tokens_per_second(self) -> float:
        return (self.tokens - self.first_tokens) / (self.end - self.start)


def measure(name: str, model, tokenizer, examples, config_kwargs: dict, steps: int,
            cpu_head_on: bool = False) -> tuple[str, float | str, list[float]]:
    """Real tokens/s of one setup and its per-step losses (a string saying why, where it does not run)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from training import cpu_head

    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        config = SFTConfig(output_dir=out, max_steps=steps, logging_steps=1, save_strategy="no", report_to="none",
                           use_cpu=True, disable_tqdm=True, **config_kwargs)
        try:
            trainer = SFTTrainer(model=copy.deepcopy(model), args=config, processing_class=tokenizer,
                                 train_dataset=Dataset.from_list([{"messages": e.as_openai()} for e in examples]),
                                 callbacks=[clock])
            if cpu_head_on:  # as training/sft.py's make_trainer does
                cpu_head.replace(trainer)
            trainer.train()
        except Exception as exc:  # a setup TRL refuses on this machine is reported, not fatal
            return name, f"does not run here: {type(exc).__name__}: {str(exc)[:120]}", []
    return name, clock.tokens_per_second(), clock.losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=16, help="examples per setup (after one warm-up step)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the two cpu-demo setups, in turn")
    parser.add_argument("--skip-full", action="store_true", help="do not time the full cpu-demo retrain")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lima import embedded_model
    from training import chat_setup, common, recipe as recipes, sft

    recipe = recipes.load("cpu-demo")
    folder = embedded_model.prepare()
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    chat_setup.setup(model, tokenizer, recipe.lima.eot_token)
    examples = sft.build_dataset(recipe, "dialogue", None, "project").examples
    examples = examples[: args.examples + 8]  # room for the warm-up step of the batched setups
    bf16 = common.bf16_ok("cpu")
    shared = dict(learning_rate=recipe.sft["learning_rate"], max_length=recipe.max_length,
                  assistant_only_loss=True, eos_token=recipe.lima.eot_token)
    micro = recipe.sft["per_device_train_batch_size"]
    cpu_demo = dict(per_device_train_batch_size=micro, gradient_accumulation_steps=1, bf16=bf16,
                    activation_checkpointing=recipe.sft["activation_checkpointing"])
    steps = args.examples // micro + 1
    ours, before = "cpu-demo preset (micro-batch 1, no padding)", "cpu-demo with TRL's chunked head (before)"
    speeds: dict[str, list[float]] = {ours: [], before: []}
    losses: dict[str, list[list[float]]] = {ours: [], before: []}
    for _ in range(args.rounds):  # in turn, so a slow stretch of this machine falls on both
        for name, head in ((before, False), (ours, True)):
            _, value, curve = measure(name, model, tokenizer, examples, {**shared, **cpu_demo}, steps, head)
            speeds[name].append(value)
            losses[name].append(curve)
    others = [
        ("TRL defaults (batch 8 padded, checkpointing)", dict(per_device_train_batch_size=8, bf16=bf16)),
        ("TRL defaults + packing", dict(per_device_train_batch_size=8, bf16=bf16, packing=True)),
    ]
    results = [(name, statistics.median(values), values) for name, values in speeds.items()]
    batched_steps = max(2, args.examples // 8 + 1)  # one warm-up step and at least one timed
    results += [(*measure(name, model, tokenizer, examples, {**shared, **kwargs}, batched_steps)[:2], [])
                for name, kwargs in others]
    baseline = results[0][1]
    print(f"\ncpu-demo dialogue examples, max length {recipe.max_length}, bf16 autocast {bf16}, "
          f"{os.cpu_count()} cores, {steps - 1} timed steps\n")
    print(f"{'setup':48} {'real tokens/s':>14} {'vs cpu-demo':>12}   rounds")
    for name, value, rounds in results:
        if isinstance(value, str):
            print(f"{name:48} {value}")
        else:
            print(f"{name:48} {value:>14.1f} {value / baseline:>12.2f}   {' '.join(f'{v:.1f}' for v in rounds)}")
    print(f"\ncpu-demo against its own before: {baseline / statistics.median(speeds[before]):.2f}x tokens/s "
          "(issue 26: >= 1.3x)")
    print("\nper-step loss, the same examples in the same order (each head repeats its own within a run):")
    print(f"{'step':>4} {'TRL chunked head':>17} {'cpu head':>9} {'difference':>11}")
    theirs, mine = losses[before][0], losses[ours][0]
    for step, (t, m) in enumerate(zip(theirs, mine), 1):
        print(f"{step:>4} {t:>17.4f} {m:>9.4f} {m - t:>+11.4f}")
    if theirs and mine:
        step, gap = max(enumerate((abs(m - t) for t, m in zip(theirs, mine)), 1), key=lambda found: found[1])
        print(f"largest difference {gap:.4f}, at step {step} ({gap / theirs[step - 1]:.2%} of its loss); "
              f"mean loss {statistics.mean(theirs):.4f} against {statistics.mean(mine):.4f}")

    if not args.skip_full:
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "LIMA_HOME": home}
            (Path(home) / "models").mkdir()
            os.symlink(folder, Path(home) / "models" / folder.name)  # reuse the prepared model
            start = time.perf_counter()
            result = subprocess.run([*lima_command(), "train", "--variant", "dialogue",
                                     "--preset", "cpu-demo"], env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
        status = "done" if result.returncode == 0 else f"failed: {result.stderr.strip()[-300:]}"
        print(f"\nfull cpu-demo dialogue retrain (lima train): {wall / 60:.1f} min wall time, {status}")


if __name__ == "__main__":
    main()
