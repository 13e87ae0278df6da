"""The Retrain tab: one button starts `lima train` in its own process; progress is read back.

The training process writes its record and every step to the database; this tab polls it once a
second to draw a progress bar, step/epoch/ETA, the loss curve and the run history. A second start
while a run is going is refused; a failed run shows its reason and chat keeps working, since the
training never runs inside the UI's process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import gradio as gr
import pandas as pd

from dialogues import export, jsonl, lima_data, project
from dialogues.jsonl import DataError
from lima import home
from lima.store import chatlog, connect, utcnow
from training import recipe as recipes, runs

CHAIN_SOURCES = [("the project's 30 chains", "project"), ("LIMA's 30 multi-turn dialogues", "lima"),
                 ("chains exported from rated conversations", "rated")]


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
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = home.home() / "exports" / f"rated-chains-{stamp}.jsonl"
    jsonl.write(path, chains)
    return path, len(chains), len(skipped)


def describe(preset: str, variant: str, chains: str) -> str:
    """What a run would train on, counted before it starts."""
    try:
        recipe = recipes.load(preset)
    except ValueError as exc:
        return f"⚠ {exc}"
    try:
        lima = lima_data.load()
    except DataError as exc:
        return f"⚠ LIMA data: {exc}. Set LIMA_DATASET to a local train.jsonl (or HF_TOKEN for the hub)."
    n = min(recipe.data.lima_examples or len(lima.single), len(lima.single))
    parts = [f"**{n}** LIMA single-turn examples" + (f" (a seeded sample of {len(lima.single)})"
                                                     if n < len(lima.single) else "")]
    if variant == "dialogue":
        if chains == "project":
            parts.append(f"**{len(project.chains())}** project dialogue chains")
        elif chains == "lima":
            parts.append(f"**{len(lima.multi)}** LIMA multi-turn dialogues")
        else:
            exported, skipped = export.export_chains(chatlog.all_conversations(connect(), sources=("chat", "compare")))
            parts.append(f"**{len(exported)}** chains from rated conversations ({len(skipped)} left out: "
                         "unrated or failed turns without a rewrite)")
    base = recipe.base if recipe.base != "embedded" else "the embedded SmolLM2-135M-Instruct"
    return f"{' + '.join(parts)} · base {base} · {recipe.description}"


class TrainingProcess:
    """Starts and tracks the training subprocess for this UI."""

    def __init__(self, service_url: str):
        self.service_url = service_url
        self.process: subprocess.Popen | None = None
        self.log: Path | None = None
        self.started_at = ""

    def start(self, preset: str, variant: str, chains: str) -> str:
        db = connect()
        current = runs.running(db)
        if current is not None or (self.process and self.process.poll() is None):
            which = f"run {current['id']}" if current else "a run that is starting"
            raise gr.Error(f"A retrain is already running ({which}); wait for it or cancel it first.")
        if chains == "rated":
            path, count, _ = rated_chains_file()
            if count == 0:
                raise gr.Error("No rated conversation qualifies as a chain yet: every assistant turn must be "
                               "rated Pass or Excellent, or rewritten.")
            chains = str(path)
        logs = home.home() / "logs"
        logs.mkdir(exist_ok=True)
        self.log = logs / f"train-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.log"
        cmd = [sys.executable, "-m", "lima.cli", "train", "--variant", variant, "--preset", preset,
               "--chains", chains, "--service-url", self.service_url]
        self.started_at = utcnow()
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return f"started `lima train --variant {variant} --preset {Path(preset).stem}`; log: {self.log}"

    def startup_failure(self) -> str | None:
        """The reason a process that exited before creating its run record gave, if it did."""
        if self.process is None or self.process.poll() in (None, 0):
            return None
        tail = self.log.read_text(errors="replace").strip().splitlines()[-3:] if self.log else []
        return " ".join(tail) or f"exited with code {self.process.returncode}"


def progress_html(run: dict | None, speed: float | None = None) -> str:
    if run is None:
        return "<div id='train-progress'>No training run yet.</div>"
    step, total = run["step"] or 0, run["max_steps"] or 0
    percent = 100 if run["status"] == "done" else (100 * step / total if total else 0)
    eta = f" · ETA {int(run['eta_seconds'] // 60)} min {int(run['eta_seconds'] % 60)} s" \
        if run["status"] == "running" and run["eta_seconds"] else ""
    epoch = f" · epoch {run['epoch']:.2f}" if run["epoch"] is not None else ""
    loss = f" · loss {run['loss']:.3f}" if run["loss"] is not None else ""
    loss += f" · {speed:.0f} tokens/s" if speed else ""
    detail = run["error"] if run["status"] in ("failed", "cancelled") else (run["model_path"] or "")
    return (f"<div id='train-progress' data-status='{run['status']}' data-step='{step}' data-total='{total}'>"
            f"<progress value='{percent:.1f}' max='100' style='width:100%;height:1.2em'></progress>"
            f"<div><b>{run['status']}</b> · run {run['id']} · step {step}/{total or '?'}{epoch}{loss}{eta}</div>"
            f"<div>{detail}</div></div>")


def build(service_url: str) -> dict:
    trainer = TrainingProcess(service_url)
    default_preset = "lima-paper" if os.environ.get("LIMA_ENGINE") == "vllm" else "cpu-demo"
    with gr.Row():
        preset = gr.Dropdown(label="Preset", choices=preset_choices(), value=default_preset, elem_id="preset")
        variant = gr.Radio(label="Variant", choices=["dialogue", "zero-shot"], value="dialogue")
        chains = gr.Radio(label="Dialogue chains", choices=CHAIN_SOURCES, value="project")
    plan = gr.Markdown(elem_id="train-plan")
    with gr.Row():
        start = gr.Button("Retrain dialogue variant", variant="primary", elem_id="retrain")
        cancel = gr.Button("Cancel run", variant="stop", elem_id="cancel-run")
    message = gr.Markdown(elem_id="train-message")
    progress = gr.HTML(progress_html(None))
    loss = gr.LinePlot(x="step", y="loss", title="Training loss", height=260, y_axis_format=".2f",
                       elem_id="loss-chart")
    history = gr.Dataframe(label="Runs", interactive=False, wrap=True)
    timer = gr.Timer(1.0)

    def on_variant(v):
        return gr.update(value=f"Retrain {v} variant")

    variant.change(on_variant, variant, start)
    for control in (preset, variant, chains):
        control.change(describe, [preset, variant, chains], plan)

    def on_start(p, v, c):
        return trainer.start(p, v, c)

    start.click(on_start, [preset, variant, chains], message)

    def on_cancel():
        current = runs.running(connect())
        if current is None:
            gr.Info("No run is going.")
            return "no run to cancel"
        runs.request_cancel(connect(), current["id"])
        return f"asked run {current['id']} to stop at its next step"

    cancel.click(on_cancel, None, message)

    def poll():
        db = connect()
        recent = runs.history(db, 20)
        latest = recent[0] if recent else None
        failure = trainer.startup_failure()
        note = gr.update()
        if failure and not (latest and latest["started"] >= trainer.started_at):
            note = f"⚠ training did not start: {failure}"
            trainer.process = None
        points = pd.DataFrame(runs.losses(db, latest["id"]) if latest else [], columns=["step", "epoch", "loss",
                                                                                        "learning_rate"])
        table = pd.DataFrame([{"run": r["id"], "status": r["status"], "variant": r["variant"], "preset": r["preset"],
                               "examples": r["examples"], "step": f"{r['step'] or 0}/{r['max_steps'] or '?'}",
                               "loss": round(r["loss"], 3) if r["loss"] is not None else None,
                               "result": r["error"] or r["model_path"] or ""} for r in recent])
        if len(points):  # a little headroom: vega crowds the axis when the range is tiny
            low, high = float(points["loss"].min()), float(points["loss"].max())
            pad = max(0.05, (high - low) * 0.1)
            points = gr.update(value=points, y_lim=[round(low - pad, 2), round(high + pad, 2)])
        speed = runs.tokens_per_second(db, latest["id"]) if latest else None
        return progress_html(latest, speed), points, table, note

    timer.tick(poll, None, [progress, loss, history, message])
    return {"load": (describe, [preset, variant, chains], plan)}

