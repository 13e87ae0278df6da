"""Train a LIMA variant with TRL's SFTTrainer, one command per variant (and, with ``--stage kto|dpo``,
a preference step on top of it from the ratings: ``training/preference.py``).

    lima train --variant dialogue --preset cpu-demo                       # CPU, about 10 minutes
    lima train --variant dialogue --stage kto                             # learn from the ratings
    lima train --variant zero-shot --preset lima-paper --base Qwen/Qwen2.5-7B --lima GAIR/lima
    accelerate launch --config_file training/accelerate/fsdp.yaml -m training.train \\
        --variant dialogue --preset lima-paper                            # several GPUs or nodes

Steps, top to bottom:
  1. the recipe: the paper's base YAML, the preset's overrides, then flags (--base, --max-steps,
     --lora, --set sft.FIELD=VALUE or lima.FIELD=VALUE)
  2. the data: LIMA + chains -> the training set, recorded with its sha256 and counts
  3. the run record (refused while another run is running)
  4. the model: base + EOT token + shared chat template + residual dropout (+ LoRA)
  5. a disk-space check for the checkpoints, then training, with progress in the database
  6. checkpoint selection on the development prompts (judge when configured)
  7. the chosen model saved under $LIMA_HOME/models
  8. its behaviour measured beside the base's (training/behaviour.py), stored with the run
  9. registered (with a warning when it is clearly worse than the base) and handed to the service
A failure or a cancel is recorded with its reason and registers nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import sys
from pathlib import Path

from dialogues import lima_data, preferences, training_sets
from dialogues.jsonl import DataError
from lima import children, home, paper
from lima.store import connect
from lima.store.registry import register
from lima.model_files import ModelLoadError, check_folder
from training import behaviour, chat_setup, recipe as recipes, runs, service_link

# torch, transformers, TRL and the judge's client are imported where used: `lima --help` and a
# refused run should not wait seconds for them.

log = logging.getLogger("lima.train")

# Files of a Trainer checkpoint that a served model does not need.
TRAINER_STATE = ("trainer_state.json", "training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state")


class TrainingError(RuntimeError):
    """A run cannot go on; the message is what the person sees."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", required=True, choices=paper.VARIANTS)
    parser.add_argument("--preset", default="cpu-demo", help=f"one of {', '.join(recipes.presets())}, or a YAML file")
    parser.add_argument("--lima", help="LIMA JSONL file or hub id (default: $LIMA_DATASET, else GAIR/lima)")
    parser.add_argument("--chains", default="project", help="dialogue chains: project, lima, or a chains JSONL file")
    parser.add_argument("--base", default=os.environ.get("LIMA_BASE_MODEL"),
                        help="base model folder or hub id ('embedded' = SmolLM2-135M-Instruct; default: "
                             "$LIMA_BASE_MODEL, else the preset's)")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    parser.add_argument("--lora", action="store_true", default=None, help="train LoRA adapters, merged at the end")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    parser.add_argument("--service-url", default=os.environ.get("LIMA_SERVICE_URL"),
                        help="a running `lima serve` to load the new model into (default: $LIMA_SERVICE_URL)")
    parser.add_argument("--pause-service", choices=["auto", "always", "never"], default="auto",
                        help="sleep the service while training (auto: when it uses the GPU this run trains on)")
    parser.add_argument("--judge-url", default=os.environ.get("LIMA_JUDGE_URL"), help="OpenAI-compatible judge")
    parser.add_argument("--judge-model", default=os.environ.get("LIMA_JUDGE_MODEL"))
    stages = parser.add_argument_group("preference stages (training/preference.py)")
    stages.add_argument("--stage", choices=("sft", *preferences.STAGES), default="sft",
                        help="sft: supervised on LIMA (+ chains); kto: learn from the Fail / Pass / Excellent "
                             "ratings; dpo: learn from the rewrites")
    stages.add_argument("--from", dest="from_model", metavar="MODEL",
                        help="the registered model a kto/dpo stage starts from (default: the variant's, "
                             "lima-dialogue); the new one is served as MODEL-kto or MODEL-dpo")
    stages.add_argument("--models", nargs="+", metavar="NAME", help="only replies of these models")
    stages.add_argument("--raters", nargs="+", metavar="NAME", help="only these raters' ratings and rewrites")
    stages.add_argument("--openers-only", action="store_true",
                        help="only conversations that start from an evaluation opener")
    stages.add_argument("--since", metavar="DATE", help="only ratings and rewrites made from this date (ISO)")
    stages.add_argument("--expect-sha256", help="refuse to start unless the set is this one (the one previewed)")


# -- 2. data ---------------------------------------------------------------------------------------

def build_dataset(recipe: recipes.Recipe, variant: str, lima: str | lima_data.LimaData | None,
                  chains: str) -> training_sets.TrainingSet:
    """The variant's training set from LIMA (a path or hub id, or data already loaded) and the chains;
    a preset may take a seeded sample of LIMA's single-turn rows."""
    data = lima if isinstance(lima, lima_data.LimaData) else lima_data.load(lima)
    n = recipe.lima.lima_examples
    if n is not None and n < len(data.single):
        keep = sorted(random.Random(recipe.lima.seed).sample(range(len(data.single)), n))
        data = lima_data.LimaData(data.origin, [data.single[i] for i in keep], data.multi)
    return training_sets.build(variant, data, chains)


# -- 4. model ----------------------------------------------------------------------------------------

def resolve_base(base: str) -> str:
    if base == "embedded":
        from lima import embedded_model

        return str(embedded_model.prepare())
    path = check_folder("base", base)
    return str(path) if path else base


def bf16_ok(device: str) -> bool:
    import torch

    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def load_base(base: str, device: str, recipe: recipes.Recipe):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Big models on a GPU train in bf16 weights; on a CPU float32 weights with bf16 autocast.
    dtype = torch.bfloat16 if device == "cuda" and recipe.sft.get("bf16") else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(base)
    except Exception as exc:  # missing files, corrupt weights, unknown architecture: all the same to the user
        raise TrainingError(f"base model {base} could not be loaded: {type(exc).__name__}: {exc}") from exc
    return model, tokenizer


def lora_config(recipe: recipes.Recipe, eot_id: int):
    from peft import LoraConfig

    # The new EOT row of the embeddings must learn too: train just that row, not the whole matrix.
    lora = recipe.lima.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules="all-linear", trainable_token_indices=[eot_id], task_type="CAUSAL_LM")


# -- 5. disk ------------------------------------------------------------------------------------------

def check_disk(parameters: int, bytes_per_param: int, copies: int, *folders: Path) -> None:
    need = int(parameters * bytes_per_param * copies * 1.1)
    for folder in folders:
        free = shutil.disk_usage(folder).free
        if free < need:
            raise TrainingError(f"not enough disk space for checkpoints under {folder}: need about "
                                f"{need / 2**30:.1f} GiB for {copies} copies of the model, {free / 2**30:.1f} GiB free")


# -- 7. save and register -------------------------------------------------------------------------

def publish(source: Path | None, model, tokenizer, dest: Path, provenance: dict) -> Path:
    """Write the served model folder atomically: complete under its final name, or not at all."""
    partial = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        if source is not None:
            shutil.copytree(source, partial, ignore=shutil.ignore_patterns(*[f"{p}*" for p in TRAINER_STATE]))
        else:
            model.save_pretrained(partial)
            tokenizer.save_pretrained(partial)
        (partial / "lima_run.json").write_text(json.dumps(provenance, indent=2))
        os.replace(partial, dest)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise TrainingError(f"could not write the model to {dest}: {exc.strerror or exc}") from exc
    return dest


# -- the run -------------------------------------------------------------------------------------------

def shared_run_id(variant: str) -> tuple[str, bool]:
    """(run id, is this the main process): under `accelerate launch` every rank must write to the
    same run folder, and only rank 0 writes the database."""
    from accelerate import PartialState

    state = PartialState()
    box = [runs.new_id(variant) if state.is_main_process else None]
    if state.num_processes > 1:
        import torch.distributed

        torch.distributed.broadcast_object_list(box, src=0)
    return box[0], state.is_main_process


def run(args) -> str:
    if getattr(args, "stage", "sft") != "sft":
        from training import preference

        return preference.run(args)
    recipe = recipes.load(args.preset, args.set, base=args.base, sft__max_steps=args.max_steps,
                          lima__lora__enabled=args.lora)
    base = resolve_base(recipe.base)
    lima = lima_data.load(args.lima)
    dataset = build_dataset(recipe, args.variant, lima, args.chains)
    # what the new model and its base are measured on afterwards: rows this run does not train on
    settings = recipe.lima.behaviour
    references = behaviour.held_out(behaviour.reference_pool(lima), {e.id for e in dataset.examples},
                                    settings.references, settings.seed)
    from training.progress import DatabaseProgress

    run_id, is_main = shared_run_id(args.variant)
    run_dir = home.runs_dir() / run_id
    db = connect()
    work = lambda progress: _train(args, recipe, dataset, references, base, db, run_id, run_dir, progress)  # noqa: E731
    if not is_main:  # workers train; rank 0 keeps the record
        return work(DatabaseProgress(db, run_id, writes=False))
    runs.start(db, run_id, variant=args.variant, preset=recipe.name, base=base, chains=dataset.chains,
               config=recipe.model_dump(), dataset_sha256=dataset.sha256, dataset_counts=dataset.counts,
               examples=len(dataset.examples), output_dir=str(run_dir))
    return recorded(db, run_id, work)


def recorded(db, run_id: str, work) -> str:
    """``work(progress)`` under a started run record, which ends as it ended: a failure with its
    reason, Ctrl-C as cancelled. SIGTERM (the UI's hard stop, `kill`, the workbench stopping) and
    SIGHUP (its terminal closing) become a cancel at the next step instead of a crash."""
    from training.progress import DatabaseProgress

    progress = DatabaseProgress(db, run_id)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: runs.request_cancel(db, run_id))
    try:
        return work(progress)
    except KeyboardInterrupt:
        runs.finish(db, run_id, "cancelled", error="interrupted (Ctrl-C)")
        raise
    except BaseException as exc:
        runs.finish(db, run_id, "failed", error=str(exc) or type(exc).__name__)
        raise


def make_trainer(recipe, dataset, model, tokenizer, run_dir: Path, parameters: int, eot_id: int, callbacks):
    """TRL's SFTTrainer: the recipe's ``sft`` block as it is, plus what the run and the LIMA format decide."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    device = "cuda" if next(model.parameters()).is_cuda else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    sft = dict(recipe.sft)
    if sft.get("bf16") and not bf16_ok(device):
        log.info("bf16 is not supported on this %s: training in float32", device)
        sft["bf16"] = False
    if sft.get("fp16") and device != "cuda":
        sft["fp16"] = False
    micro = sft.get("per_device_train_batch_size", 8)
    config = SFTConfig(
        **sft, output_dir=str(run_dir),
        # the paper's batch in examples per optimizer step, whatever fits in one forward pass
        gradient_accumulation_steps=max(1, recipe.batch_size(parameters) // (micro * world)),
        # the LIMA format: loss on every assistant turn, each ending with the EOT token
        packing=False, assistant_only_loss=True, eos_token=recipe.lima.eot_token,
        use_cpu=device == "cpu", logging_steps=1, save_strategy="epoch", save_only_model=True, report_to="none",
        data_seed=sft.get("seed", 0), dataloader_drop_last=False)
    trainer = SFTTrainer(
        model=model, args=config, processing_class=tokenizer,
        train_dataset=Dataset.from_list([{"messages": e.as_openai()} for e in dataset.examples]),
        peft_config=lora_config(recipe, eot_id) if recipe.lima.lora.enabled else None,
        callbacks=callbacks)
    return trainer


def fit_recorder(db, run_id: str, writes: bool = True):
    """Keeps what each fit of the EOT row did in the run record (rank 0 only)."""
    return (lambda reports: runs.update(db, run_id, eot_fit=reports)) if writes else (lambda reports: None)


def judge_for(args):
    """The judge the flags name, else the environment's (``LIMA_JUDGE_URL``), else None."""
    from evaluation.judge import Judge

    url, model = getattr(args, "judge_url", None), getattr(args, "judge_model", None)
    return Judge(url, model) if url and model else Judge.from_env()


def measured(args, db, run_id: str, parent: tuple[str, str], model: tuple[str, str], the_plan, device: str,
             dest: Path) -> str | None:
    """Measure the new model beside its parent (``training/behaviour.py``); the warning the model is
    registered with (None: not worse). A cancel during it removes ``dest`` and raises
    ``behaviour.Cancelled``; a measurement that fails is said in the warning, the model still served."""
    try:
        worse = behaviour.measure_run(db, run_id, parent, model, the_plan, device, judge_for(args))
    except behaviour.Cancelled:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except Exception as exc:  # noqa: BLE001 - the trained model is kept; the reason is shown with it
        log.exception("measuring the new model failed")
        runs.update(db, run_id, activity=None)
        return f"not measured beside {parent[0]}: {type(exc).__name__}: {exc}"
    if worse:
        warning = f"worse than {parent[0]}: " + "; ".join(worse)
        print(f"warning: {warning}", flush=True)
        return warning
    return None


def finish_run(args, db, run_id: str, name: str, dest: Path, warning: str | None, **fields) -> str:
    """Register the new model (with its warning), hand it to the service, close the record; the summary."""
    register(db, name, str(dest), kind="trained", run_id=run_id, warning=warning)
    served = service_link.notify(args.service_url, name, dest) if args.service_url else \
        "registered; `lima serve` will serve it at its next start"
    runs.finish(db, run_id, "done", model_name=name, model_path=str(dest), warning=warning, **fields)
    return f"{name} -> {dest}; {served}" + (f"\nwarning: {warning}" if warning else "")


def _train(args, recipe, dataset, references, base, db, run_id, run_dir, progress) -> str:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    is_main = progress.writes
    pause = args.pause_service if is_main else "never"
    with service_link.paused(args.service_url, pause, device == "cuda"):
        outcome = _fit_select_publish(args, recipe, dataset, base, db, run_id, run_dir, progress, device)
        if outcome is None:  # cancelled or a worker rank: nothing to register
            return f"run {run_id} " + ("cancelled" if is_main else "worker done")
        name, dest, used, chosen, how = outcome
        try:
            warning = measured(args, db, run_id, ("base", base), (name, str(dest)),
                               behaviour.plan(recipe, references), device, dest)
        except behaviour.Cancelled:
            runs.finish(db, run_id, "cancelled", error="cancelled while measuring the new model; nothing was registered")
            return f"run {run_id} cancelled"
    summary = finish_run(args, db, run_id, name, dest, warning, selected_checkpoint=chosen, selection=how)
    return f"run {run_id} done ({how}): {summary}"


def fit(trainer, db, run_id: str, run_dir: Path, progress) -> bool:
    """``trainer.train()``; False when it was cancelled (recorded as such, the run folder removed)."""
    try:
        trainer.train()
    except OSError as exc:
        raise TrainingError(f"training stopped: {exc.strerror or exc} (is the disk full?)") from exc
    if progress.cancelled:
        shutil.rmtree(run_dir, ignore_errors=True)
        runs.finish(db, run_id, "cancelled", error="cancelled at step "
                    f"{trainer.state.global_step} of {trainer.state.max_steps}; nothing was registered")
        return False
    return True


def _fit_select_publish(args, recipe, dataset, base, db, run_id, run_dir, progress, device):
    """Steps 4 to 7 up to the published folder; None when cancelled or on a worker rank."""
    import torch

    from evaluation.judge import JudgeUnavailable
    from training import residual_dropout, selection
    from training.progress import CheckpointWindow

    model, tokenizer = load_base(base, device, recipe)
    parameters = sum(p.numel() for p in model.parameters())
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        model.to(device)  # the EOT fit's forward pass runs where training will
    eot_id, refit = chat_setup.prepare(
        model, tokenizer, recipe.lima, [e.as_openai() for e in dataset.examples], recipe.max_length,
        bool(recipe.sft.get("bf16")) and bf16_ok(device), on_fit=fit_recorder(db, run_id, progress.writes),
        cancelled=lambda: progress.cancelled)
    first, last = recipe.lima.checkpoints.epochs
    window = CheckpointWindow(first, last, progress)
    # LoRA trains the EOT row through PEFT's own trainable tokens: no refit of the base row
    callbacks = [progress, window] + ([refit] if refit is not None and not recipe.lima.lora.enabled else [])
    residual_dropout.attach(model, recipe.dropout_top(parameters))
    bytes_per_param = 2 if next(model.parameters()).dtype == torch.bfloat16 else 4
    run_dir.mkdir(parents=True, exist_ok=True)
    lora = recipe.lima.lora.enabled
    check_disk(parameters, bytes_per_param, (last - first + 2) if not lora else 1,
               run_dir, home.models_dir())

    trainer = make_trainer(recipe, dataset, model, tokenizer, run_dir, parameters, eot_id, callbacks)
    used = len(trainer.train_dataset)
    if used == 0:
        raise TrainingError(f"no example has assistant tokens within {recipe.max_length} tokens")
    if progress.writes:
        runs.update(db, run_id, examples=used)
    if not fit(trainer, db, run_id, run_dir, progress):
        return None
    if not trainer.is_world_process_zero():
        return None

    # 6. which weights to serve
    final_model = trainer.model.merge_and_unload() if lora else trainer.model
    judge = judge_for(args)
    candidates = [selection.Candidate(epoch, run_dir / f"checkpoint-{step}") for epoch, step in
                  sorted(window.saved.items())] if not lora else []
    chosen, how = None, "final weights (no checkpoint in the epoch window)"
    if candidates:
        def load(path):
            from transformers import AutoModelForCausalLM, AutoTokenizer

            return (AutoModelForCausalLM.from_pretrained(path, dtype=next(final_model.parameters()).dtype)
                    .to(final_model.device).eval(), AutoTokenizer.from_pretrained(path))

        try:
            chosen, how = selection.select(db, run_id, candidates, load, recipe.lima.checkpoints, recipe.lima.decoding,
                                           judge)
        except JudgeUnavailable as exc:
            raise TrainingError(str(exc)) from exc

    # 7. publish the chosen weights as a complete folder
    name = paper.model_name(args.variant)
    dest = home.models_dir() / f"{args.variant}-{run_id}"
    provenance = {"run_id": run_id, "variant": args.variant, "preset": recipe.name, "base": base,
                  "dataset_sha256": dataset.sha256, "dataset_counts": dataset.counts, "examples_trained": used,
                  "example_ids": [e.id for e in dataset.examples],  # what later measurements must hold out
                  "recipe": recipe.model_dump(), "checkpoint": chosen.path.name if chosen else "final",
                  "eot_fit": refit.reports if refit else None,
                  "selection": how}
    publish(chosen.path if chosen else None, final_model, tokenizer, dest, provenance)
    for checkpoint in run_dir.glob("checkpoint-*"):  # the chosen one was copied; free the disk
        shutil.rmtree(checkpoint, ignore_errors=True)
    return name, dest, used, chosen.path.name if chosen else "final", how


def main(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    children.exit_with_parent()  # started from a workbench that is gone: cancel, do not train on alone
    try:
        print(run(args))
    except (DataError, ValueError, TrainingError, ModelLoadError, runs.RunRefused) as exc:
        # PreferenceError is a ValueError: a set too small or all one label, said as it is
        print(f"lima train: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lima train: interrupted; the run is recorded as cancelled", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
