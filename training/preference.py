"""The preference stages of `lima train`: KTO from Fail / Pass / Excellent, DPO from rewrites.

    lima train --variant dialogue --stage kto                      # on top of lima-dialogue
    lima train --variant dialogue --stage dpo --from lima-dialogue-kto --raters alice --since 2026-11-01

Steps, top to bottom:
  1. the recipe's ``kto`` or ``dpo`` block (TRL's KTOConfig / DPOConfig fields) and ``lima.preference``
  2. the set from the chat log (``dialogues.preferences``), its counts by label, model and rater
     printed before anything loads; a set too small or all one label is refused with the reason;
     ``--expect-sha256`` refuses a set that changed after it was previewed
  3. the run record: stage, starting model, the rating and rewrite ids, sha256 and counts
  4. TRL's KTOTrainer or DPOTrainer on the starting model (its frozen copy is the reference), with
     progress and the reward margin in the database, cancel at the next step
  5. the final weights saved, measured beside the starting model (``training/behaviour.py``),
     registered as ``<from>-<stage>`` (``lima-dialogue-kto``; with a warning when clearly worse)
     and loaded into the running service
A failure or a cancel is recorded with its reason and registers nothing; the log is only read.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
from pathlib import Path

from dialogues import lima_data, preferences
from dialogues.jsonl import DataError
from lima import home, paper
from lima.model_files import check_folder
from lima.store import connect
from lima.store.registry import registered
from lima.store import runs
from training import behaviour, chat_setup, common, recipe as recipes, service_link
from training.common import TrainingError
from training.request import TrainRequest


def build_set(db, recipe: recipes.Recipe, stage: str, chosen: preferences.Filters) -> preferences.PreferenceSet:
    setting = recipe.lima.preference
    return preferences.build(db, stage, chosen, setting.pass_weight, setting.min_rows, setting.max_rows)


BASE = "base"  # the name the service and the chat give the base model


def starting_names(db) -> list[str]:
    """Every name a stage can start from, as the chat lists them: the registered models, then ``base``."""
    return [*[n for n in registered(db) if n != BASE], BASE]


def starting_model(db, request: TrainRequest) -> tuple[str, str]:
    """(name, folder or hub id) of the model the stage starts from: ``base`` is the base model (the
    embedded one, or ``--base`` / ``$LIMA_BASE_MODEL``), as the service serves it; any other name a
    registered model."""
    name = request.from_model or paper.model_name(request.variant)
    if name == BASE:
        return name, common.resolve_base(request.base or "embedded")
    models = registered(db)
    if name not in models:
        raise TrainingError(f"no model named '{name}' to start from (these can: {', '.join(starting_names(db))}); "
                            f"train the {request.variant} variant first, or name one with --from")
    check_folder(name, models[name])
    return name, models[name]


def trained_ids(path: str) -> set[str] | None:
    """The training examples behind the model in ``path``, from its ``lima_run.json``: none for a
    base (no such file), None when a trained model's record does not list them."""
    record = Path(path) / "lima_run.json"
    if not record.exists():
        return set()
    try:
        ids = json.loads(record.read_text()).get("example_ids")
    except (OSError, ValueError):
        return None
    return set(ids) if isinstance(ids, list) else None


def references(recipe: recipes.Recipe, from_path: str) -> tuple[list, set[str] | None]:
    """(held-out reference conversations for measuring, the ids the starting model trained on or
    None when unknown): LIMA (when at hand) and the project's chains, minus what it learnt from."""
    ids = trained_ids(from_path)
    if ids is None:
        print("note: the starting model's record does not say what it trained on: P(end) is not measured", flush=True)
        return [], None
    try:
        lima = lima_data.load()
    except (DataError, OSError):  # LIMA not at hand: the project's chains still serve
        lima = None
    settings = recipe.lima.behaviour
    return behaviour.held_out(behaviour.reference_pool(lima), ids, settings.references, settings.seed), ids


def gone_models(db, data: preferences.PreferenceSet) -> list[str]:
    """Models whose replies are in the set but which are no longer registered."""
    served = set(registered(db))
    return sorted(m for m in data.counts.get("model", {}) if m not in served and m != "unknown")


def run(request: TrainRequest) -> str:
    stage = request.stage
    recipe = recipes.load(request.preset, request.overrides, **{f"{stage}__max_steps": request.max_steps},
                          lima__lora__enabled=request.lora)
    db = connect()
    from_name, from_path = starting_model(db, request)
    data = build_set(db, recipe, stage, request.filters)
    print(f"{stage.upper()} set from the ratings: {data.summary().replace('**', '')}", flush=True)
    gone = gone_models(db, data)
    if gone:
        print(f"note: {', '.join(gone)} no longer registered; their replies are learnt from as they were said",
              flush=True)
    if request.expect_sha256 and request.expect_sha256 != data.sha256:
        raise TrainingError("the ratings changed after the set was previewed (a rating or rewrite was added, changed "
                            "or cleared, or a filter changed): look at the new counts and start again")

    block = trainer_block(stage, recipe, data)
    weights = {k: block[k] for k in ("desirable_weight", "undesirable_weight") if k in block}
    if weights:
        print("class weights: " + ", ".join(f"{k} {v:g}" for k, v in weights.items()), flush=True)
    config = {**recipe.model_dump(), stage: block}  # the record keeps what the trainer was given
    run_id = runs.new_id(f"{request.variant}-{stage}")
    run_dir = home.runs_dir() / run_id
    runs.start(db, run_id, variant=request.variant, stage=stage, from_model=from_name, preset=recipe.name,
               base=from_path, config=config, dataset_sha256=data.sha256, dataset_counts=data.counts,
               rating_ids=data.record(), examples=len(data.rows), output_dir=str(run_dir))
    return common.recorded(db, run_id, lambda progress: _train(request, recipe, data, from_name, from_path, db, run_id,
                                                         run_dir, progress))


def trainer_block(stage: str, recipe: recipes.Recipe, data: preferences.PreferenceSet) -> dict:
    """The recipe's ``kto`` or ``dpo`` block as the trainer gets it. For KTO, unless the recipe sets
    ``desirable_weight`` or ``undesirable_weight``, the rarer class is weighted up so that both
    weigh the same in the loss (weight x rows equal, inside the KTO paper's advice of a ratio from
    1 to 4/3): a person rates many replies Pass and few Fail, or the other way round."""
    block = dict(recipe.stage(stage))
    if stage != "kto" or {"desirable_weight", "undesirable_weight"} & set(block):
        return block
    desirable = sum(1 for r in data.rows if r["label"])
    undesirable = len(data.rows) - desirable
    if desirable and undesirable:
        if desirable > undesirable:
            block["undesirable_weight"] = round(desirable / undesirable, 4)
        elif undesirable > desirable:
            block["desirable_weight"] = round(undesirable / desirable, 4)
    return block


def fit_prompts(rows: list[dict], tokenizer, max_length: int | None) -> tuple[list[dict], int]:
    """Rows whose prompt leaves less than a quarter of ``max_length`` for the reply lose their oldest
    exchanges (a user turn and its reply at a time) until it fits: TRL would drop such a row, and a
    rating on the fifth turn of a long conversation would teach nothing. Returns (rows, how many
    were shortened); a row that fits is left exactly as the service rendered it."""
    if not max_length:
        return rows, 0
    budget = max_length * 3 // 4
    out, shortened = [], 0
    for row in rows:
        prompt = row["prompt"]
        while len(prompt) > 2 and len(tokenizer.apply_chat_template(
                prompt, add_generation_prompt=True, tokenize=True, return_dict=False)) > budget:
            prompt = prompt[2:]  # still opens on a user turn and ends on the one replied to
        shortened += prompt is not row["prompt"]
        out.append({**row, "prompt": prompt})
    return out, shortened


def wanted(data: preferences.PreferenceSet) -> list[list[dict]]:
    """The conversations a set moves towards: each desirable reply (KTO) or chosen rewrite (DPO)
    after its prompt."""
    return [row["prompt"] + (row["chosen"] if "chosen" in row else row["completion"])
            for row in data.rows if row.get("label", True)]


def make_trainer(stage: str, recipe, data, model, tokenizer, run_dir, callbacks, prepared: bool = False):
    """TRL's KTOTrainer or DPOTrainer: the recipe's block as it is, plus what the run decides. With
    LoRA the reference is the same weights with the adapters off, so no second copy is held.
    ``prepared``: the model was changed in memory (a base given the EOT token here); TRL would load
    its reference from the folder, without that token, so the reference is a copy of this model."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    device = common.device()
    block = trainer_block(stage, recipe, data)
    if block.get("bf16") and not common.bf16_ok(device):
        block["bf16"] = False
    rows, shortened = fit_prompts(data.rows, tokenizer, block.get("max_length"))
    if shortened:
        print(f"{shortened} long prompt{'s' * (shortened != 1)} kept only their latest exchanges to fit "
              f"{stage}.max_length ({block['max_length']} tokens)", flush=True)
    # KTO reads its rows in order (its KL term pairs neighbours); shuffle once, seeded, so the
    # repeated rows of one reply do not sit side by side.
    random.Random(block.get("seed", 0)).shuffle(rows)
    config_class, trainer_class = (KTOConfig, KTOTrainer) if stage == "kto" else (DPOConfig, DPOTrainer)
    config = config_class(**block, output_dir=str(run_dir), use_cpu=device == "cpu", logging_steps=1,
                          save_strategy="no", report_to="none")
    eot_id = tokenizer.convert_tokens_to_ids(recipe.lima.eot_token)
    lora = recipe.lima.lora.enabled
    reference = copy.deepcopy(model).eval() if prepared and not lora else None
    return trainer_class(model=model, ref_model=reference, args=config, processing_class=tokenizer,
                         train_dataset=Dataset.from_list(rows), callbacks=callbacks,
                         peft_config=common.lora_config(recipe, eot_id) if lora else None)


def _train(request, recipe, data, from_name, from_path, db, run_id, run_dir, progress) -> str:
    device = common.device()
    stage = request.stage
    with service_link.paused(request.service_url, request.pause_service, device == "cuda"):
        model, tokenizer = common.load_base(from_path, device, recipe)
        # a trained variant has the EOT token and the template already; a plain base gets them here,
        # the token's row fitted on the replies the set wants more of (training/eot_fit.py)
        block = recipe.stage(stage)
        prepared = recipe.lima.eot_token not in tokenizer.get_vocab()
        _, refit = chat_setup.prepare(model, tokenizer, recipe.lima, wanted(data), block.get("max_length") or 1024,
                                      bool(block.get("bf16")) and common.bf16_ok(device),
                                      on_fit=common.fit_recorder(db, run_id), cancelled=lambda: progress.cancelled)
        callbacks = [progress] + ([refit] if refit is not None and not recipe.lima.lora.enabled else [])
        parameters = sum(p.numel() for p in model.parameters())
        run_dir.mkdir(parents=True, exist_ok=True)
        common.check_disk(parameters, 4, 1, home.models_dir())
        trainer = make_trainer(stage, recipe, data, model, tokenizer, run_dir, callbacks, prepared)
        used, limit = len(trainer.train_dataset), recipe.stage(stage).get("max_length")
        if used == 0:
            raise TrainingError(f"no row fits in {limit} tokens ({stage}.max_length): every prompt fills it")
        if used < len(data.rows):  # a last message alone longer than max_length: TRL drops the row
            print(f"{len(data.rows) - used} of {len(data.rows)} rows left out: their last message alone fills "
                  f"{stage}.max_length ({limit} tokens)", flush=True)
        runs.update(db, run_id, examples=used)
        if not common.fit(trainer, db, run_id, run_dir, progress):
            return f"run {run_id} cancelled"
        name = f"{from_name}-{stage}"
        dest = home.models_dir() / f"{name}-{run_id}"
        held_out, ids = references(recipe, from_path)
        provenance = {"run_id": run_id, "stage": stage, "from": from_name, "from_path": from_path,
                      "preset": recipe.name, "dataset_sha256": data.sha256, "dataset_counts": data.counts,
                      "learnt_from": data.record(),
                      "example_ids": sorted(ids) if ids is not None else None,  # what its parent trained on
                      "recipe": runs.get(db, run_id).config}  # as recorded: the block the trainer got
        final = trainer.model.merge_and_unload() if recipe.lima.lora.enabled else trainer.model
        common.publish(None, final, tokenizer, dest, provenance)
        shutil.rmtree(run_dir, ignore_errors=True)
        del trainer, final, model
        try:
            warning = common.measured(request, db, run_id, (from_name, from_path), (name, str(dest)),
                                      behaviour.plan(recipe, held_out), device, dest)
        except behaviour.Cancelled:
            return f"run {run_id} cancelled"
    summary = common.finish_run(request, db, run_id, name, dest, warning, selection="final weights")
    return f"run {run_id} done: {summary}"
