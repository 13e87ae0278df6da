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


@migrations()
def m003_chat_log(db: Database) -> None:
    # Conversations and every turn, written as they happen; an assistant turn is saved while it
    # streams (status 'streaming') so a killed process still leaves what was shown ('interrupted'
    # at the next start; 'replaced' once a retry has answered anew).
    db["conversations"].create({
        "id": str, "created": str, "updated": str, "model": str, "opener_id": str, "rater": str, "title": str,
        "source": str, "replay_of": str,
    }, pk="id", not_null={"created", "model", "source"})
    db["turns"].create({
        "id": int, "conversation_id": str, "position": int, "role": str, "content": str, "model": str,
        "params": str, "prompt_tokens": int, "completion_tokens": int, "first_token_ms": float,
        "latency_ms": float, "finish_reason": str, "status": str, "created": str, "updated": str,
    }, pk="id", foreign_keys=[("conversation_id", "conversations", "id")],
        not_null={"conversation_id", "position", "role", "content", "status", "created"})
    db["turns"].create_index(["conversation_id", "position"], unique=True)
    # Every click is a row: the latest per turn is the rating, the earlier ones are its history.
    db["ratings"].create({"id": int, "turn_id": int, "label": str, "rater": str, "created": str},
                         pk="id", foreign_keys=[("turn_id", "turns", "id")], not_null={"turn_id", "created"})
    db["ratings"].create_index(["turn_id", "id"])
    # What a rater says an assistant turn should have been; the original stays in `turns`.
    db["rewrites"].create({"id": int, "turn_id": int, "content": str, "rater": str, "created": str},
                          pk="id", foreign_keys=[("turn_id", "turns", "id")],
                          not_null={"turn_id", "content", "created"})
    db.create_view("current_ratings", """
        select r.turn_id, r.label, r.rater, r.created from ratings r
        where r.id = (select max(id) from ratings where turn_id = r.turn_id)""")


@migrations()
def m004_comparisons_and_judgments(db: Database) -> None:
    # A side-by-side session: two linked conversations fed the same user turns, and the rater's
    # whole-conversation verdict ('left', 'right' or 'tie', always in terms of left_model/right_model,
    # whatever a blind session displayed).
    db["comparisons"].create({
        "id": str, "created": str, "opener_id": str, "left_model": str, "right_model": str, "blind": int,
        "swapped": int, "left_conversation": str, "right_conversation": str, "verdict": str, "verdict_rater": str,
        "verdict_time": str, "kind": str,
    }, pk="id", foreign_keys=[("left_conversation", "conversations", "id"),
                              ("right_conversation", "conversations", "id")],
        not_null={"created", "left_model", "right_model", "left_conversation", "right_conversation"},
        defaults={"blind": 0, "swapped": 0, "kind": "live"})
    # Every judge call, keyed by a hash of exactly what was asked, so nothing is asked twice.
    db["judgments"].create({
        "key": str, "protocol": str, "judge_model": str, "judge_url": str, "comparison_id": str,
        "position": int, "turn_id": int, "order": str, "result": str, "raw": str, "created": str,
    }, pk="key", not_null={"protocol", "judge_model", "created"})


@migrations()
def m005_progress_tokens(db: Database) -> None:
    # TRL's running count of real (non-padding) tokens, so throughput can be read off the log.
    db["run_progress"].add_column("tokens", int)


@migrations()
def m006_experiments(db: Database) -> None:
    # A judge's ratings are ratings (rater 'judge:<model>'), but never a person's: the current rating
    # a person sees, exports and reports on is the latest one a person gave.
    db.execute("drop view if exists current_ratings")
    db.create_view("current_ratings", """
        select r.turn_id, r.label, r.rater, r.created from ratings r
        where r.id = (select max(id) from ratings where turn_id = r.turn_id
                      and (rater is null or rater not like 'judge:%'))""")
    db["ratings"].add_column("judgment", str)  # a judge's rating: the key of its raw answer in judgments
    # `lima experiment`: the paper's section 6 run end to end. One row per experiment, its stage as
    # it goes; one row per (opener, model) conversation it held.
    db["experiments"].create({
        "id": str, "created": str, "updated": str, "status": str, "stage": str, "error": str,
        "base": str, "preset": str, "judge_url": str, "judge_model": str, "max_tokens": int, "models": str,
        "out_dir": str, "summary": str,
    }, pk="id", not_null={"created", "status"})
    db["experiment_conversations"].create({
        "experiment_id": str, "opener_id": str, "model": str, "conversation_id": str, "comparison_id": str,
        "ended": str,
    }, pk=("experiment_id", "opener_id", "model"), foreign_keys=[("experiment_id", "experiments", "id")])


@migrations()
def m007_preference_runs(db: Database) -> None:
    # A preference run (`lima train --stage kto|dpo`) records which ratings went in: the current
    # rating's id is what a run names, so the view carries it.
    db.execute("drop view if exists current_ratings")
    db.create_view("current_ratings", """
        select r.id, r.turn_id, r.label, r.rater, r.created from ratings r
        where r.id = (select max(id) from ratings where turn_id = r.turn_id
                      and (rater is null or rater not like 'judge:%'))""")
    db["runs"].add_column("stage", str)            # sft (null for older runs), kto or dpo
    db["runs"].add_column("from_model", str)       # the registered model a preference run starts from
    db["runs"].add_column("rating_ids", str)       # JSON: the ratings (and rewrites) it learnt from
    db["run_progress"].add_column("reward_margin", float)  # TRL's rewards/margins at that step


@migrations()
def m008_run_behaviour(db: Database) -> None:
    # Every run measures its model's own behaviour beside the model it started from, on prompts it
    # did not train on (training/behaviour.py): one row per (run, role), role 'parent' or 'model'.
    # `measured_in` is the run that generated the replies: a parent measured before with the same
    # settings (same folder, same prompts) is not measured again. `key` says what was measured.
    db["run_behaviour"].create({
        "id": int, "run_id": str, "role": str, "model": str, "path": str, "key": str, "measured_in": str,
        "replies": int, "ended": float, "median_tokens": float, "p90_tokens": float, "loops": float,
        "references": int, "p_end": float, "p_eot": float, "judge_mean": float, "judged": int,
        "max_new_tokens": int, "seconds": float, "created": str,
    }, pk="id", foreign_keys=[("run_id", "runs", "id")], not_null={"run_id", "role", "path", "key", "created"})
    db["run_behaviour"].create_index(["run_id", "role"], unique=True)
    db["run_behaviour"].create_index(["path", "key"])
    # The replies behind a measurement, to read what the figures summarise.
    db["behaviour_replies"].create({
        "id": int, "behaviour_id": int, "source": str, "prompt_id": str, "turn": int, "prompt": str,
        "text": str, "tokens": int, "ended": int, "loop": int, "judge_score": float,
    }, pk="id", foreign_keys=[("behaviour_id", "run_behaviour", "id")], not_null={"behaviour_id", "text"})
    db["behaviour_replies"].create_index(["behaviour_id"])
    # A run whose model is clearly worse than its parent still registers it, with the reasons here
    # and on the model's row, so every model list can show them.
    db["runs"].add_column("warning", str)
    db["models"].add_column("warning", str)
    db["runs"].add_column("activity", str)
    db["runs"].add_column("eot_fit", str)  # JSON: how the new EOT row was fitted (training/eot_fit.py)  # what a run does after its last step ("measuring ...")


@migrations()
def m009_judge_probabilities(db: Database) -> None:
    # JSON {answer: probability} from the judge's log probabilities of its first token, where its
    # endpoint gives them (null where it does not): the weight behind a label, not just the label.
    db["judgments"].add_column("probabilities", str)
