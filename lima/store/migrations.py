"""Numbered schema migrations. Append only: never edit one that has shipped, add the next."""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("lima_studio")


@migrations()
def m001_models_registry(db: Database) -> None:
    # The names the service serves and the folders behind them; a retrain replaces a row only
    # after its checkpoint is complete, so a failed run never touches what is served.
    db["models"].create(
        {"name": str, "path": str, "kind": str, "run_id": str, "registered": str},
        pk="name",
        not_null={"path", "kind", "registered"},
    )


@migrations()
def m002_training_runs(db: Database) -> None:
    # One row per `lima train`: what went in (config, base, dataset hash and counts), how it is
    # going (the latest progress, for cheap polling) and how it ended.
    db["runs"].create({
        "id": str, "variant": str, "preset": str, "base": str, "chains": str, "status": str, "error": str,
        "config": str, "dataset_sha256": str, "dataset_counts": str, "examples": int,
        "started": str, "ended": str, "updated": str, "pid": int, "output_dir": str,
        "model_name": str, "model_path": str, "selected_checkpoint": str, "selection": str,
        "cancel_requested": int, "step": int, "max_steps": int, "epoch": float, "loss": float,
        "learning_rate": float, "eta_seconds": float,
    }, pk="id", not_null={"variant", "preset", "status", "started"}, defaults={"cancel_requested": 0})
    # Every logged training step, for the loss chart.
    db["run_progress"].create({
        "id": int, "run_id": str, "step": int, "max_steps": int, "epoch": float, "loss": float,
        "learning_rate": float, "grad_norm": float, "eta_seconds": float, "time": str,
    }, pk="id", foreign_keys=[("run_id", "runs", "id")], not_null={"run_id", "step", "time"})
    db["run_progress"].create_index(["run_id", "step"])
    # What each kept checkpoint wrote for the development prompts, and how it was judged.
    db["dev_generations"].create({
        "id": int, "run_id": str, "checkpoint": str, "epoch": float, "prompt_id": str, "prompt": str,
        "output": str, "judge_score": float, "judge_raw": str, "human_rating": str, "created": str,
    }, pk="id", foreign_keys=[("run_id", "runs", "id")], not_null={"run_id", "checkpoint", "prompt_id", "output"})

