"""The Report tab: the same side-by-side report as `lima report`, with its chart."""

from __future__ import annotations

from datetime import datetime, timezone

import gradio as gr

from evaluation import report as reports
from lima import home


def render(openers_only: bool):
    built = reports.build(openers_only=openers_only)
    out = home.reports_dir() / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    md, chart = reports.write(built, out)
    return reports.markdown(built, None), (str(chart) if chart else None), f"written to `{md}`"


def build() -> dict:
    with gr.Row():
        openers_only = gr.Checkbox(label="Opener conversations only", value=False)
        refresh = gr.Button("Build report", variant="primary", elem_id="report-build")
    with gr.Row():
        text = gr.Markdown(elem_id="report-text")
        chart = gr.Image(label="Fail / Pass / Excellent (the paper's Figure 7 layout)", type="filepath",
                         interactive=False, elem_id="report-chart")
    where = gr.Markdown()
    refresh.click(render, openers_only, [text, chart, where])
    return {"load": (render, openers_only, [text, chart, where])}
