"""The one door from the workbench into training: which presets to offer, what a run would learn
(counted by ``sft.build_dataset``, the set ``lima train`` builds), and a handle on the
``lima train`` process it starts: start, progress read back from the run records, cancel.

Training runs in its own process, so a crash or a cancel never takes chat down; the service it
hands the new model to is an argument of the handle, passed on the command line.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from dialogues import export, jsonl, lima_data, preferences
from dialogues.jsonl import DataError
from dialogues.schema import Chain
from lima import children, home, paper
from lima.store import chatlog, connect, utcnow
from lima.store import behaviour as behaviour_store
from lima.store import runs
from training import preference, recipe as recipes, run_report
from training.request import TrainRequest
from training.sft import build_dataset

STAGES = [("SFT: LIMA + dialogue chains", "sft"), ("KTO: learn from the ratings", "kto"),
          ("DPO: learn from the rewrites", "dpo")]
CHAIN_SOURCES = [("the project's 30 chains", "project"), ("LIMA's 30 multi-turn dialogues", "lima"),
                 ("chains exported from rated conversations", "rated")]


class LaunchRefused(RuntimeError):
    """A run cannot start now; the message says why and what to do."""


def preset_choices() -> list[tuple[str, str]]:
    """Shipped presets by name, plus any YAML a user put in $LIMA_HOME/presets/."""
    choices = [(name, name) for name in recipes.presets()]
    user = home.home() / "presets"
    if user.is_dir():
        choices += [(f"{p.stem} (yours)", str(p)) for p in sorted(user.glob("*.yaml"))]
    return choices


def rated_chains_file() -> tuple[Path, int, int]:
    """Export rated conversations as chains to a file; (path, chains, conversations left out)."""
    chains, skipped = export.export_chains(chatlog.all_conversations(connect(), sources=("chat", "compare")))
    path = home.home() / "exports" / f"rated-chains-{datetime.now(timezone.utc):%Y%m%d-%H%M%S-%f}.jsonl"
    jsonl.write(path, chains)
    return path, len(chains), len(skipped)


def describe(preset: str, variant: str, chains: str) -> str:
    """What a run would train on, counted before it starts (Markdown, one line)."""
    try:
        recipe = recipes.load(preset)
        lima = lima_data.load()
    except ValueError as exc:
        return f"⚠ {exc}"
    except DataError as exc:
        return f"⚠ LIMA data: {exc}. Set LIMA_DATASET to a local train.jsonl (or HF_TOKEN for the hub)."
    note = ""
    if variant == "dialogue" and chains == "rated":
        path, count, skipped = rated_chains_file()
        if count == 0:
            return ("⚠ No rated conversation qualifies as a chain yet: every assistant turn must be rated Pass or "
                    f"Excellent, or rewritten ({skipped} left out).")
        chains, note = str(path), f" ({skipped} conversations left out: unrated or failed turns without a rewrite)"
    try:
        dataset = build_dataset(recipe, variant, lima, chains)
    except DataError as exc:
        return f"⚠ {exc}"
    single = sum(1 for e in dataset.examples if not isinstance(e, Chain))
    parts = [f"**{single}** LIMA single-turn examples"
             + (f" (a seeded sample of {len(lima.single)})" if single < len(lima.single) else "")]
    dialogues = len(dataset.examples) - single
    if dialogues:
        kind = {"project": "project dialogue chains", "lima": "LIMA multi-turn dialogues"}.get(
            dataset.chains, "chains from rated conversations")
        parts.append(f"**{dialogues}** {kind}{note}")
    base = recipe.base if recipe.base != "embedded" else "the embedded SmolLM2-135M-Instruct"
    return f"{' + '.join(parts)} · base {base} · {recipe.description}: {recipe.summary()}"


def starting_models() -> list[str]:
    """Exactly the names a preference stage accepts (``--from``): the registered models, the
    dialogue variant first, then ``base``."""
    names = preference.starting_names(connect())
    return sorted(names, key=lambda n: n != paper.DIALOGUE)


def filter_choices() -> tuple[list[str], list[str]]:
    """The models and raters a preference set can be narrowed to."""
    return preferences.choices(connect())


def preview(preset: str, stage: str, filters: preferences.Filters | None = None) -> tuple[str, str | None]:
    """What a KTO or DPO run would learn from the log now: (Markdown, the set's sha256, or None when
    it would be refused). The sha256 goes with the start, so a rating added in between is noticed."""
    db = connect()
    try:
        recipe = recipes.load(preset)
        data = preference.build_set(db, recipe, stage, filters or preferences.Filters())
    except ValueError as exc:  # PreferenceError included: the reason, as it is
        return f"⚠ {exc}", None
    gone = preference.gone_models(db, data)
    note = f"\n\n{', '.join(gone)}: no longer registered; their replies are learnt from as they were said." \
        if gone else ""
    block = preference.trainer_block(stage, recipe, data)
    how = (f"{recipe.description}: {block.get('num_train_epochs', 3):g} epochs at lr {block.get('learning_rate'):g}, "
           f"beta {block.get('beta', 0.1):g}")
    how += "".join(f", {k.replace('_', ' ')} {block[k]:g}" for k in ("desirable_weight", "undesirable_weight")
                   if k in block)
    return f"{data.summary()}\n\n{data.sample()}{note}\n\n{how}", data.sha256


def last_preference_run() -> runs.Run | None:
    """The latest finished KTO or DPO run, with the ids of what it learnt from (``rating_ids``:
    ratings, rewrites, and the conversations with a reply rated Fail)."""
    return runs.latest_done(connect(), preferences.STAGES)


@dataclass
class Status:
    """What the Retrain tab draws: the latest run, its loss curve and speed, the recent runs and
    each one's behaviour figures (run id -> role -> measurement)."""

    latest: runs.Run | None
    recent: list[runs.Run] = field(default_factory=list)
    losses: list[runs.Progress] = field(default_factory=list)
    tokens_per_second: float | None = None
    behaviour: dict[str, dict[str, behaviour_store.Measured]] = field(default_factory=dict)


def status(limit: int = 20) -> Status:
    db = connect()
    recent = runs.history(db, limit)
    latest = recent[0] if recent else None
    if latest is None:
        return Status(None)
    return Status(latest, recent, runs.losses(db, latest.id), runs.tokens_per_second(db, latest.id),
                  behaviour_store.for_runs(db, [r.id for r in recent]))


def behaviour_view(run_id: str) -> tuple[str, str | None]:
    """A run's model beside its parent: (Markdown with its warning, chart PNG path or None)."""
    db = connect()
    measured = behaviour_store.for_run(db, run_id)
    record = runs.get(db, run_id)
    warning = f"⚠ **{record.warning}**\n\n" if record.warning else ""
    if not measured:
        return warning + f"Run {run_id} has no behaviour figures (it did not get to measuring its model).", None
    return warning + run_report.table(measured), str(run_report.draw(measured, run_report.chart_path(run_id)))


class TrainingProcess:
    """Starts and tracks one ``lima train`` process for a workbench."""

    def __init__(self, service_url: str | None, api_key: str | None = None):
        self.service_url, self.api_key = service_url, api_key
        self.process: subprocess.Popen | None = None
        self.log: Path | None = None
        self.started_at = ""

    def start(self, preset: str, variant: str, chains: str, stage: str = "sft", from_model: str | None = None,
              expect_sha256: str | None = None, filters: preferences.Filters | None = None) -> str:
        current = runs.running(connect())
        if current is not None or self.alive():
            which = f"run {current.id}" if current else "a run that is starting"
            raise LaunchRefused(f"A retrain is already running ({which}); wait for it or cancel it first.")
        if stage != "sft" and not expect_sha256:
            raise LaunchRefused("Nothing to learn from yet: the preview above says why.")
        if stage == "sft" and variant == "dialogue" and chains == "rated":
            path, count, _ = rated_chains_file()
            if count == 0:
                raise LaunchRefused("No rated conversation qualifies as a chain yet: every assistant turn must be "
                                    "rated Pass or Excellent, or rewritten.")
            chains = str(path)
        logs = home.home() / "logs"
        logs.mkdir(exist_ok=True)
        self.log = logs / f"train-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.log"
        chosen = filters or preferences.Filters()
        request = TrainRequest(variant=variant, preset=preset, chains=chains, service_url=self.service_url,
                               stage=stage, **({} if stage == "sft" else {
                                   "from_model": from_model, "expect_sha256": expect_sha256, "models": chosen.models,
                                   "raters": chosen.raters, "openers_only": chosen.openers_only,
                                   "since": chosen.since}))
        cmd = [*children.lima_command(), "train", *request.argv()]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.api_key:  # a secret travels in the environment, never on a command line others can read
            env["LIMA_API_KEY"] = self.api_key
        self.started_at = utcnow()
        with open(self.log, "wb") as out:
            self.process = children.spawn(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        what = f" --stage {stage}" if stage != "sft" else ""
        return f"started `lima train --variant {variant}{what} --preset {Path(preset).stem}`; log: {self.log}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def startup_failure(self, latest: runs.Run | None) -> str | None:
        """Why the process exited before creating its run record, if it did (once)."""
        if self.process is None or self.process.poll() in (None, 0):
            return None
        if latest and latest.started >= self.started_at:
            return None
        tail = self.log.read_text(errors="replace").strip().splitlines()[-3:] if self.log else []
        self.process = None
        return " ".join(tail) or "exited without a reason"

    @staticmethod
    def cancel() -> str:
        db = connect()
        current = runs.running(db)
        if current is None:
            return "no run to cancel"
        runs.request_cancel(db, current.id)
        return f"asked run {current.id} to stop at its next step"
