"""The Retrain tab: one button starts `lima train` in its own process; progress is read back.

Everything about training goes through ``training.launcher``: the presets, what a run would
learn, the process and its records. This tab polls the records once a second to draw a progress
bar, step/epoch/ETA, the loss curve and the run history. A second start while a run is going is
refused; a failed run shows its reason and chat keeps working.
"""

from __future__ import annotations

import os

import gradio as gr
import pandas as pd

from training import launcher


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


def build(service_url: str, api_key: str | None = None) -> dict:
    trainer = launcher.TrainingProcess(service_url, api_key)
    default_preset = "lima-paper" if os.environ.get("LIMA_ENGINE") == "vllm" else "cpu-demo"
    with gr.Row():
        preset = gr.Dropdown(label="Preset", choices=launcher.preset_choices(), value=default_preset, elem_id="preset")
        variant = gr.Radio(label="Variant", choices=["dialogue", "zero-shot"], value="dialogue")
        chains = gr.Radio(label="Dialogue chains", choices=launcher.CHAIN_SOURCES, value="project")
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
        control.change(launcher.describe, [preset, variant, chains], plan)

    def on_start(p, v, c):
        try:
            return trainer.start(p, v, c)
        except launcher.LaunchRefused as exc:
            raise gr.Error(str(exc)) from None

    start.click(on_start, [preset, variant, chains], message)

    def on_cancel():
        note = trainer.cancel()
        if note.startswith("no run"):
            gr.Info("No run is going.")
        return note

    cancel.click(on_cancel, None, message)

    def poll():
        now = launcher.status()
        failure = trainer.startup_failure(now.latest)
        note = f"⚠ training did not start: {failure}" if failure else gr.update()
        points = pd.DataFrame(now.losses, columns=["step", "epoch", "loss", "learning_rate"])
        table = pd.DataFrame([{"run": r["id"], "status": r["status"], "variant": r["variant"], "preset": r["preset"],
                               "examples": r["examples"], "step": f"{r['step'] or 0}/{r['max_steps'] or '?'}",
                               "loss": round(r["loss"], 3) if r["loss"] is not None else None,
                               "result": r["error"] or r["model_path"] or ""} for r in now.recent])
        if len(points):  # a little headroom: vega crowds the axis when the range is tiny
            low, high = float(points["loss"].min()), float(points["loss"].max())
            pad = max(0.05, (high - low) * 0.1)
            points = gr.update(value=points, y_lim=[round(low - pad, 2), round(high + pad, 2)])
        return progress_html(now.latest, now.tokens_per_second), points, table, note

    timer.tick(poll, None, [progress, loss, history, message])
    return {"load": (launcher.describe, [preset, variant, chains], plan), "trainer": trainer}
