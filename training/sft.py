"""`lima train --stage sft`: a LIMA variant with TRL's SFTTrainer (`lima train` is ``training/train.py``).

Steps, top to bottom:
  1. the recipe: the paper's base YAML, the preset's overrides, then the request's (--base,
     --max-steps, --lora, --set sft.FIELD=VALUE or lima.FIELD=VALUE)
  2. the data: LIMA + chains -> the training set, recorded with its sha256 and counts
  3. the run record (refused while another run is running)
  4. the model: base + EOT token (fitted where the answers end) + shared chat template + residual
     dropout (+ LoRA)
  5. a disk-space check for the checkpoints, then training, with progress in the database
  6. checkpoint selection on the development prompts (judge when configured)
  7. the chosen model saved under $LIMA_HOME/models
  8. its behaviour measured beside the base's (training/behaviour.py), stored with the run
  9. registered (with a warning when it is clearly worse than the base) and handed to the service
A failure or a cancel is recorded with its reason and registers nothing.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path

from dialogues import lima_data, training_sets
from lima import home, paper
from lima.store import connect
from lima.store import runs
from training import behaviour, chat_setup, common, cpu_head, recipe as recipes, service_link
from training.request import TrainRequest

log = logging.getLogger("lima.train")

# torch, transformers, TRL and the judge's client are imported where used: `lima --help` and a
# refused run should not wait seconds for them.


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


def run(request: TrainRequest) -> str:
    recipe = recipes.load(request.preset, request.overrides, base=request.base, sft__max_steps=request.max_steps,
                          lima__lora__enabled=request.lora)
    base = common.resolve_base(recipe.base)
    lima = lima_data.load(request.lima)
    dataset = build_dataset(recipe, request.variant, lima, request.chains)
    # what the new model and its base are measured on afterwards: rows this run does not train on
    settings = recipe.lima.behaviour
    references = behaviour.held_out(behaviour.reference_pool(lima), {e.id for e in dataset.examples},
                                    settings.references, settings.seed)
    from training.progress import DatabaseProgress

    run_id, is_main = shared_run_id(request.variant)
    run_dir = home.runs_dir() / run_id
    db = connect()
    work = lambda progress: _train(request, recipe, dataset, references, base, db, run_id, run_dir, progress)  # noqa: E731
    if not is_main:  # workers train; rank 0 keeps the record
        return work(DatabaseProgress(db, run_id, writes=False))
    runs.start(db, run_id, variant=request.variant, preset=recipe.name, base=base, chains=dataset.chains,
               config=recipe.model_dump(), dataset_sha256=dataset.sha256, dataset_counts=dataset.counts,
               examples=len(dataset.examples), output_dir=str(run_dir))
    return common.recorded(db, run_id, work)


def make_trainer(recipe, dataset, model, tokenizer, run_dir: Path, parameters: int, eot_id: int, callbacks):
    """TRL's SFTTrainer: the recipe's ``sft`` block as it is, plus what the run and the LIMA format decide."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    device = "cuda" if next(model.parameters()).is_cuda else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    sft = dict(recipe.sft)
    if sft.get("bf16") and not common.bf16_ok(device):
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
        peft_config=common.lora_config(recipe, eot_id) if recipe.lima.lora.enabled else None,
        callbacks=callbacks)
    cpu_head.replace(trainer)  # TRL's chunked head is made for a GPU's memory; on a CPU it is 40% of a step
    return trainer


def _train(request, recipe, dataset, references, base, db, run_id, run_dir, progress) -> str:
    device = common.device()
    is_main = progress.writes
    pause = request.pause_service if is_main else "never"
    with service_link.paused(request.service_url, pause, device == "cuda"):
        outcome = _fit_select_publish(request, recipe, dataset, base, db, run_id, run_dir, progress, device)
        if outcome is None:  # cancelled or a worker rank: nothing to register
            return f"run {run_id} " + ("cancelled" if is_main else "worker done")
        name, dest, used, chosen, how = outcome
        try:
            warning = common.measured(request, db, run_id, ("base", base), (name, str(dest)),
                                      behaviour.plan(recipe, references), device, dest)
        except behaviour.Cancelled:
            return f"run {run_id} cancelled"
    summary = common.finish_run(request, db, run_id, name, dest, warning, selected_checkpoint=chosen, selection=how)
    return f"run {run_id} done ({how}): {summary}"


def _fit_select_publish(request, recipe, dataset, base, db, run_id, run_dir, progress, device):
    """Steps 4 to 7 up to the published folder; None when cancelled or on a worker rank."""
    import torch

    from evaluation.judge import JudgeUnavailable
    from training import residual_dropout, selection
    from training.progress import CheckpointWindow

    model, tokenizer = common.load_base(base, device, recipe)
    parameters = sum(p.numel() for p in model.parameters())
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        model.to(device)  # the EOT fit's forward pass runs where training will
    eot_id, refit = chat_setup.prepare(
        model, tokenizer, recipe.lima, [e.as_openai() for e in dataset.examples], recipe.max_length,
        bool(recipe.sft.get("bf16")) and common.bf16_ok(device),
        on_fit=common.fit_recorder(db, run_id, progress.writes), cancelled=lambda: progress.cancelled)
    first, last = recipe.lima.checkpoints.epochs
    window = CheckpointWindow(first, last, progress)
    # LoRA trains the EOT row through PEFT's own trainable tokens: no refit of the base row
    callbacks = [progress, window] + ([refit] if refit is not None and not recipe.lima.lora.enabled else [])
    residual_dropout.attach(model, recipe.dropout_top(parameters))
    bytes_per_param = 2 if next(model.parameters()).dtype == torch.bfloat16 else 4
    run_dir.mkdir(parents=True, exist_ok=True)
    lora = recipe.lima.lora.enabled
    common.check_disk(parameters, bytes_per_param, (last - first + 2) if not lora else 1,
               run_dir, home.models_dir())

    trainer = make_trainer(recipe, dataset, model, tokenizer, run_dir, parameters, eot_id, callbacks)
    used = len(trainer.train_dataset)
    if used == 0:
        raise common.TrainingError(f"no example has assistant tokens within {recipe.max_length} tokens")
    if progress.writes:
        runs.update(db, run_id, examples=used)
    if not common.fit(trainer, db, run_id, run_dir, progress):
        return None
    if not trainer.is_world_process_zero():
        return None

    # 6. which weights to serve
    final_model = trainer.model.merge_and_unload() if lora else trainer.model
    judge = common.judge_for(request)
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
            raise common.TrainingError(str(exc)) from exc

    # 7. publish the chosen weights as a complete folder
    name = paper.model_name(request.variant)
    dest = home.models_dir() / f"{request.variant}-{run_id}"
    provenance = {"run_id": run_id, "variant": request.variant, "preset": recipe.name, "base": base,
                  "dataset_sha256": dataset.sha256, "dataset_counts": dataset.counts, "examples_trained": used,
                  "example_ids": [e.id for e in dataset.examples],  # what later measurements must hold out
                  "recipe": recipe.model_dump(), "checkpoint": chosen.path.name if chosen else "final",
                  "eot_fit": refit.reports if refit else None,
                  "selection": how}
    common.publish(chosen.path if chosen else None, final_model, tokenizer, dest, provenance)
    for checkpoint in run_dir.glob("checkpoint-*"):  # the chosen one was copied; free the disk
        shutil.rmtree(checkpoint, ignore_errors=True)
    return name, dest, used, chosen.path.name if chosen else "final", how


