"""The Report tab: the same side-by-side report as `lima report`, with its charts (ratings, the
leaderboard of every model with verdicts, the raters' confusion matrix); and the latest
`lima experiment`, its stages, its running table and chart, refreshed while it runs."""

from __future__ import annotations

from datetime import datetime, timezone

import gradio as gr

from evaluation import experiment as experiments, report as reports
from lima import home
from lima.store import connect
from ui import charts


def render(openers_only: bool):
    built = reports.build(openers_only=openers_only)
    out = home.reports_dir() / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    md, chart, _ = reports.write(built, out)
    drawn = {p.name: p for p in out.glob("*.png")}
    return (reports.markdown(built, None, links=False), charts.image(chart),
            charts.image(drawn.get(reports.LEADERBOARD_PNG)), charts.image(drawn.get(reports.AGREEMENT_PNG)),
            f"written to `{md}`")


def stages_line(progress: dict) -> str:
    """The five stages, the current one in bold, with what is done of the long ones."""
    counts = {"converse": f" {progress['conversations']}/{progress['of']} conversations",
              "rate": f" {progress['rated']}/{progress['turns']} turns rated ({progress['unparsed']} unparsed)",
              "compare": f" {progress['pairs']} pairs judged"}
    current = experiments.STAGES.index(progress["stage"]) if progress["stage"] in experiments.STAGES else 0
    done = progress["status"] == "done"
    parts = []
    for i, stage in enumerate(experiments.STAGES):
        mark = "✓" if done or i < current else ("▶" if i == current else "·")
        text = f"{mark} {stage}{counts.get(stage, '') if i <= current or done else ''}"
        parts.append(f"**{text}**" if i == current and not done else text)
    return " → ".join(parts)


def render_experiment():
    """The latest experiment as it stands; the timer keeps ticking only while one runs."""
    db = connect()
    found = experiments.latest(db)
    if found is None:
        return ("No experiment yet: `lima experiment` trains both variants, holds the 10 openers with each, "
                "has a judge rate every turn on the paper's scale and writes section 6's table."), None, \
            gr.Timer(active=False)
    shot = experiments.snapshot(db, found)
    chart = None
    if not shot.judged.empty:
        out = home.home() / "experiments" / found.id
        out.mkdir(parents=True, exist_ok=True)
        chart = charts.image(reports.draw(shot.judged, out / "ratings-live.png"))
    header = (f"### Experiment `{found.id}`: {found.status}\n\n{stages_line(shot.progress)}\n\n"
              + (f"⚠ {found.error}\n\n" if found.error else ""))
    return header + experiments.markdown(shot), chart, gr.Timer(active=found.status == "running")


def build() -> dict:
    with gr.Row():
        openers_only = gr.Checkbox(label="Opener conversations only", value=False)
        refresh = gr.Button("Build report", variant="primary", elem_id="report-build")
    with gr.Row():
        text = gr.Markdown(elem_id="report-text")
        chart = gr.Image(label="Fail / Pass / Excellent (the paper's Figure 7 layout)", type="filepath",
                         interactive=False, elem_id="report-chart")
    with gr.Row():
        board_chart = gr.Image(label="Leaderboard: strengths with 95% intervals", type="filepath",
                               interactive=False, elem_id="report-leaderboard")
        agreement_chart = gr.Image(label="Rater agreement: the pair with most shared turns", type="filepath",
                                   interactive=False, elem_id="report-agreement")
    where = gr.Markdown()
    shown = [text, chart, board_chart, agreement_chart, where]
    refresh.click(render, openers_only, shown)
    with gr.Accordion("Experiment (`lima experiment`)", open=True):
        with gr.Row():
            experiment_text = gr.Markdown(elem_id="experiment-text")
            experiment_chart = gr.Image(label="The judge's ratings", type="filepath", interactive=False,
                                        elem_id="experiment-chart")
        ticking = gr.Timer(3.0, active=False)
    ticking.tick(render_experiment, None, [experiment_text, experiment_chart, ticking], show_progress="hidden")

    def load(only):
        return (*render(only), *render_experiment())

    return {"load": (load, openers_only, [*shown, experiment_text, experiment_chart, ticking])}
