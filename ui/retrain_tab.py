"""The Retrain tab: one button starts `lima train` in its own process; progress is read back.

The stage picks what is learnt: SFT (LIMA + dialogue chains), or a preference step on top of a
served model, KTO from the Fail / Pass / Excellent ratings or DPO from the rewrites, with the counts
and a sample row shown before the button is pressed and a reward-margin chart while it runs.

Everything about training goes through ``training.launcher``: the presets, what a run would
learn, the process and its records. This tab polls the records once a second to draw a progress
bar, step/epoch/ETA, the loss curve and the run history, with each run's model beside the one it
came from (``training/behaviour.py``): two columns in the history, and for the run picked (the
newest measured one by default) the figures and a chart; a warning where the new model is worse.
A second start while a run is going is refused; a failed run shows its reason and chat keeps working.
"""

from __future__ import annotations

import html
import os

import gradio as gr
import pandas as pd

from dialogues.preferences import STAGES, Filters
from lima.store import runs
from training import launcher
from ui import charts, pickers


def progress_html(run: runs.Run | None, speed: float | None = None) -> str:
    if run is None:
        return "<div id='train-progress'>No training run yet.</div>"
    step, total = run.step or 0, run.max_steps or 0
    percent = 100 if run.status == "done" else (100 * step / total if total else 0)
    eta = f" · ETA {int(run.eta_seconds // 60)} min {int(run.eta_seconds % 60)} s" \
        if run.status == "running" and run.eta_seconds else ""
    epoch = f" · epoch {run.epoch:.2f}" if run.epoch is not None else ""
    loss = f" · loss {run.loss:.3f}" if run.loss is not None else ""
    loss += f" · {speed:.0f} tokens/s" if speed else ""
    detail = run.error if run.status in ("failed", "cancelled") else (run.model_path or "")
    if run.status == "running" and run.activity:  # after the last step: measuring the new model
        detail = run.activity
    if run.warning:
        detail += f"<div class='run-warning'>⚠ {html.escape(run.warning)}</div>"
    return (f"<div id='train-progress' data-status='{run.status}' data-step='{step}' data-total='{total}'>"
            f"<progress value='{percent:.1f}' max='100' style='width:100%;height:1.2em'></progress>"
            f"<div><b>{run.status}</b> · run {run.id} · step {step}/{total or '?'}{epoch}{loss}{eta}</div>"
            f"<div>{detail}</div></div>")


def build(service_url: str, api_key: str | None = None) -> dict:
    trainer = launcher.TrainingProcess(service_url, api_key)
    default_preset = "lima-paper" if os.environ.get("LIMA_ENGINE") == "vllm" else "cpu-demo"
    with gr.Row():
        stage = gr.Radio(label="What to learn", choices=launcher.STAGES, value="sft", elem_id="train-stage")
        preset = gr.Dropdown(label="Preset", choices=launcher.preset_choices(), value=default_preset, elem_id="preset")
    with gr.Row():
        variant = gr.Radio(label="Variant", choices=["dialogue", "zero-shot"], value="dialogue")
        chains = gr.Radio(label="Dialogue chains", choices=launcher.CHAIN_SOURCES, value="project")
        start_from = gr.Dropdown(label="Start from", choices=[], visible=False, elem_id="train-from")
    with gr.Row(visible=False) as filter_row:  # which ratings a KTO or DPO run learns from
        only_models = gr.Dropdown(label="Only replies of", choices=[], multiselect=True, elem_id="train-models")
        only_raters = gr.Dropdown(label="Only ratings and rewrites by", choices=[], multiselect=True,
                                  elem_id="train-raters")
        openers_only = gr.Checkbox(label="Opener conversations only", value=False, elem_id="train-openers")
        since = gr.Textbox(label="Rated since (ISO date, optional)", placeholder="2026-11-01", elem_id="train-since")
    filters = [only_models, only_raters, openers_only, since]
    plan = gr.Markdown(elem_id="train-plan")
    previewed = gr.State(None)  # the sha256 of the preference set the plan shows
    with gr.Row():
        start = gr.Button("Retrain dialogue variant", variant="primary", elem_id="retrain")
        cancel = gr.Button("Cancel run", variant="stop", elem_id="cancel-run")
    message = gr.Markdown(elem_id="train-message")
    progress = gr.HTML(progress_html(None))
    with gr.Row():
        loss = gr.LinePlot(x="step", y="loss", title="Training loss", height=260, y_axis_format=".2f",
                           elem_id="loss-chart")
        margin = gr.LinePlot(x="step", y="reward_margin", title="Reward margin (chosen over rejected)", height=260,
                             y_axis_format=".3f", visible=False, elem_id="margin-chart")
    history = gr.Dataframe(label="Runs", interactive=False, wrap=True, elem_id="run-history")
    with gr.Group():  # what the run's model does beside the model it came from (training/behaviour.py)
        behaviour_run = gr.Dropdown(label="The run's model beside its parent", choices=[], elem_id="behaviour-run")
        behaviour_table = gr.Markdown(elem_id="behaviour-table")
        behaviour_chart = gr.Image(label="Parent and new model", type="filepath", interactive=False,
                                   elem_id="behaviour-chart")
    measured_runs = gr.State([])  # the runs with figures the dropdown offers, newest first
    timer = gr.Timer(1.0)

    def chosen(models, raters, openers, after) -> Filters:
        return Filters(models or None, raters or None, bool(openers), (after or "").strip() or None)

    def describe(p, v, c, st, *picked):
        if st == "sft":
            return launcher.describe(p, v, c), None
        return launcher.preview(p, st, chosen(*picked))

    def on_stage(st, v):
        sft = st == "sft"
        models = pickers.labelled(launcher.starting_models())
        rated_models, raters = launcher.filter_choices()
        label = f"Retrain {v} variant" if sft else f"Learn from the {'ratings' if st == 'kto' else 'rewrites'} ({st.upper()})"
        return (gr.update(value=label), gr.update(visible=sft), gr.update(visible=sft),
                gr.update(visible=not sft, choices=models, value=models[0][1] if models else None),
                gr.update(visible=not sft), gr.update(choices=rated_models), gr.update(choices=raters))

    stage.change(on_stage, [stage, variant], [start, variant, chains, start_from, filter_row, only_models, only_raters])
    variant.change(lambda v, st: gr.update(value=f"Retrain {v} variant") if st == "sft" else gr.update(),
                   [variant, stage], start)
    inputs = [preset, variant, chains, stage, *filters]
    for control in (preset, variant, chains, stage, only_models, only_raters, openers_only):
        control.change(describe, inputs, [plan, previewed])
    since.submit(describe, inputs, [plan, previewed])
    since.blur(describe, inputs, [plan, previewed])

    def on_start(p, v, c, st, origin, sha, *picked):
        try:
            return trainer.start(p, v, c, st, origin, sha, chosen(*picked))
        except launcher.LaunchRefused as exc:
            raise gr.Error(str(exc)) from None

    start.click(on_start, [preset, variant, chains, stage, start_from, previewed, *filters], message)

    def on_cancel():
        note = trainer.cancel()
        if note.startswith("no run"):
            gr.Info("No run is going.")
        return note

    cancel.click(on_cancel, None, message)

    def show_behaviour(run_id):
        if not run_id:
            return "", None
        table, chart = launcher.behaviour_view(run_id)
        return table, charts.image(chart)

    behaviour_run.change(show_behaviour, behaviour_run, [behaviour_table, behaviour_chart])

    def figures_cells(measured: dict) -> dict:
        """The history's behaviour columns: parent -> new."""
        parent, model = (measured.get(r) for r in ("parent", "model"))
        if not model:
            return {"ends by itself": "", "median tokens": ""}
        pf, mf = parent.figures if parent else None, model.figures

        def pair(read, fmt):
            values = [fmt(read(f)) if f and read(f) is not None else "n/a" for f in (pf, mf)]
            return " → ".join(values)

        return {"ends by itself": pair(lambda f: f.ended, "{:.0%}".format),
                "median tokens": pair(lambda f: f.median_tokens, "{:.0f}".format)}

    def poll(known):
        now = launcher.status()
        failure = trainer.startup_failure(now.latest)
        note = f"⚠ training did not start: {failure}" if failure else gr.update()
        points = pd.DataFrame(now.losses, columns=["step", "epoch", "loss", "learning_rate", "reward_margin"])
        preference = bool(now.latest and now.latest.stage in STAGES)
        margins = points.dropna(subset=["reward_margin"])[["step", "reward_margin"]]
        margin_update = gr.update(value=margins, visible=preference and len(margins) > 0)
        table = pd.DataFrame([{"run": r.id, "status": r.status, "variant": r.variant,
                               "stage": r.stage or "sft", "preset": r.preset,
                               "examples": r.examples, "step": f"{r.step or 0}/{r.max_steps or '?'}",
                               "loss": round(r.loss, 3) if r.loss is not None else None,
                               **figures_cells(now.behaviour.get(r.id, {})),
                               "warning": f"⚠ {r.warning}" if r.warning else "",
                               "result": r.error or r.model_path or ""} for r in now.recent])
        measured = [r.id for r in now.recent if "model" in now.behaviour.get(r.id, {})]
        # a run that has just been measured is shown at once; otherwise the person's choice stays
        runs_update = gr.update(choices=measured, value=measured[0]) if measured != known else gr.update()
        points = points[["step", "epoch", "loss", "learning_rate"]]
        if len(points):  # a little headroom: vega crowds the axis when the range is tiny
            low, high = float(points["loss"].min()), float(points["loss"].max())
            pad = max(0.05, (high - low) * 0.1)
            points = gr.update(value=points, y_lim=[round(low - pad, 2), round(high + pad, 2)])
        return (progress_html(now.latest, now.tokens_per_second), points, margin_update, table, note, runs_update,
                measured)

    timer.tick(poll, measured_runs, [progress, loss, margin, history, message, behaviour_run, measured_runs])
    return {"load": (describe, inputs, [plan, previewed]), "trainer": trainer}
