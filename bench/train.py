"""Training benchmark on the embedded model: the cpu-demo preset against TRL's defaults.

    LIMA_DATASET=/path/to/lima/train.jsonl python bench/train.py [--examples 16] [--skip-full]

In one run, on the same cpu-demo dialogue examples and the same max length, each setup trains
from the same starting weights for ``--examples`` examples and reports real (non-padding)
tokens per second, after one warm-up step:
  - cpu-demo:        one example per forward pass (no padding), no activation checkpointing
  - TRL defaults:    batches of 8 padded to the longest, activation checkpointing on
  - TRL packing:     TRL's default batch with packing (where it runs on this machine)
The ratio against the cpu-demo row is the figure. Then (unless --skip-full) the full cpu-demo
dialogue retrain runs as `lima train` would, and its wall time is printed.
"""

from __future__ import annotations

import argparse
import copy
import os
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

    def on_step_end(self, args, state, control, **kwargs):
        self.end = time.perf_counter()
        self.start = self.start or self.end

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "num_tokens" in logs:
            self.tokens = float(logs["num_tokens"])
            self.first_tokens = self.first_tokens if self.first_tokens is not None else self.tokens

    def tokens_per_second(self) -> float:
        return (self.tokens - self.first_tokens) / (self.end - self.start)


def measure(name: str, model, tokenizer, examples, config_kwargs: dict, steps: int) -> tuple[str, float | str]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        config = SFTConfig(output_dir=out, max_steps=steps, logging_steps=1, save_strategy="no", report_to="none",
                           use_cpu=True, disable_tqdm=True, **config_kwargs)
        try:
            trainer = SFTTrainer(model=copy.deepcopy(model), args=config, processing_class=tokenizer,
                                 train_dataset=Dataset.from_list([{"messages": e.as_openai()} for e in examples]),
                                 callbacks=[clock])
            trainer.train()
        except Exception as exc:  # a setup TRL refuses on this machine is reported, not fatal
            return name, f"does not run here: {type(exc).__name__}: {str(exc)[:120]}"
    return name, clock.tokens_per_second()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=16, help="examples per setup (after one warm-up step)")
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
    setups = [
        ("cpu-demo preset (micro-batch 1, no padding)",
         dict(per_device_train_batch_size=micro, gradient_accumulation_steps=1, bf16=bf16,
              activation_checkpointing=recipe.sft["activation_checkpointing"]), args.examples // micro + 1),
        ("TRL defaults (batch 8 padded, checkpointing)",
         dict(per_device_train_batch_size=8, bf16=bf16), args.examples // 8 + 1),
        ("TRL defaults + packing", dict(per_device_train_batch_size=8, bf16=bf16, packing=True),
         args.examples // 8 + 1),
    ]
    results = [measure(name, model, tokenizer, examples, {**shared, **kwargs}, steps) for name, kwargs, steps in setups]
    baseline = results[0][1]
    print(f"\ncpu-demo dialogue examples, max length {recipe.max_length}, bf16 autocast {bf16}, "
          f"{os.cpu_count()} cores\n")
    print(f"{'setup':48} {'real tokens/s':>14} {'vs cpu-demo':>12}")
    for name, value in results:
        if isinstance(value, str):
            print(f"{name:48} {value}")
        else:
            print(f"{name:48} {value:>14.1f} {value / baseline:>12.2f}")

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
