"""What every training stage shares: the base model, LoRA, disk, publishing, the run's record and
its end (the measured behaviour, registration, the service). ``training/sft.py`` and
``training/preference.py`` both build on it; neither imports the other.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
from pathlib import Path

from lima.model_files import check_folder
from lima.store.registry import register
from lima.store import runs
from training import behaviour, recipe as recipes, service_link
from training.request import TrainRequest

log = logging.getLogger("lima.train")

# Files of a Trainer checkpoint that a served model does not need.
TRAINER_STATE = ("trainer_state.json", "training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state")


def device() -> str:
    """Where this process trains: the GPU when there is one."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TrainingError(RuntimeError):
    """A run cannot go on; the message is what the person sees."""


# -- the model ----------------------------------------------------------------------------------------

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
        # No Hub kernels: transformers (5.25) turns them on by default, and ``model.train()`` on a
        # GPU then fetches kernel code from the Hub ('kernels-community/rotary'), so a machine
        # offline could not train at all (seen on an H200) and one online would run code nobody chose.
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, use_kernels=False)
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


# -- disk ---------------------------------------------------------------------------------------------

def check_disk(parameters: int, bytes_per_param: int, copies: int, *folders: Path) -> None:
    need = int(parameters * bytes_per_param * copies * 1.1)
    for folder in folders:
        free = shutil.disk_usage(folder).free
        if free < need:
            raise TrainingError(f"not enough disk space for checkpoints under {folder}: need about "
                                f"{need / 2**30:.1f} GiB for {copies} copies of the model, {free / 2**30:.1f} GiB free")


# -- save, record, measure, register -------------------------------------------------------------------

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


def fit_recorder(db, run_id: str, writes: bool = True):
    """Keeps what each fit of the EOT row did in the run record (rank 0 only)."""
    return (lambda reports: runs.update(db, run_id, eot_fit=reports)) if writes else (lambda reports: None)


def judge_for(request: TrainRequest):
    """The judge the request names, else the environment's (``LIMA_JUDGE_URL``), else None."""
    from evaluation.judge import Judge

    url, model = request.judge_url, request.judge_model
    return Judge(url, model) if url and model else Judge.from_env()


def _measure_child(parent_pid: int, run_id: str, parent, model, the_plan, device: str, judge) -> list[str]:
    """The measurement in its own process: it ends itself when the run's process is gone."""
    from lima import children
    from lima.store import connect

    os.environ[children.PARENT_ENV] = str(parent_pid)
    children.exit_with_parent()
    return behaviour.measure_run(connect(), run_id, parent, model, the_plan, device, judge)


def measure_apart(run_id: str, parent: tuple[str, str], model: tuple[str, str], the_plan, device: str,
                  judge) -> list[str]:
    """``behaviour.measure_run`` in a fresh process. In the process that has just trained, the
    engine's compute thread decodes about 45% slower on a CPU (measured on cpu-demo: 139 s against
    96 s for the base's 40 replies): the training thread's OpenMP team is still there beside the
    engine's (``behaviour.measure`` keeps its own torch work on the engine's thread for the same
    reason). Its progress and a cancel go through the run record as before; its exceptions
    (``behaviour.Cancelled`` included) come back here. A script that trains in process needs the
    ``if __name__ == "__main__":`` guard that the ``spawn`` start method asks for."""
    import gc
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    gc.collect()
    if device == "cuda":  # hand the training's cached GPU memory back before the child takes its own
        import torch

        torch.cuda.empty_cache()
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_measure_child, os.getpid(), run_id, parent, model, the_plan, device, judge).result()


def measured(request: TrainRequest, db, run_id: str, parent: tuple[str, str], model: tuple[str, str], the_plan,
             device: str, dest: Path) -> str | None:
    """Measure the new model beside its parent (``training/behaviour.py``); the warning the model is
    registered with (None: not worse). A cancel during it removes ``dest``, records the run as
    cancelled and raises ``behaviour.Cancelled``; a measurement that fails is said in the warning,
    the model still served."""
    try:
        if the_plan.apart:
            worse = measure_apart(run_id, parent, model, the_plan, device, judge_for(request))
        else:
            worse = behaviour.measure_run(db, run_id, parent, model, the_plan, device, judge_for(request))
    except behaviour.Cancelled:
        shutil.rmtree(dest, ignore_errors=True)
        runs.finish(db, run_id, "cancelled", error="cancelled while measuring the new model; nothing was registered")
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


def finish_run(request: TrainRequest, db, run_id: str, name: str, dest: Path, warning: str | None, **fields) -> str:
    """Register the new model (with its warning), hand it to the service, close the record; the summary."""
    register(db, name, str(dest), kind="trained", run_id=run_id, warning=warning)
    served = service_link.notify(request.service_url, name, dest) if request.service_url else \
        "registered; `lima serve` will serve it at its next start"
    runs.finish(db, run_id, "done", model_name=name, model_path=str(dest), warning=warning, **fields)
    return f"{name} -> {dest}; {served}" + (f"\nwarning: {warning}" if warning else "")


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


