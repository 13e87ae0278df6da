"""The Gradio workbench: Chat, Compare, Retrain, Ratings and Report tabs over one chat service.

``build_app(service_url)`` returns the Blocks; ``ui.launch`` runs it (``lima up``) with ``CSS`` and
``JS``. Nothing is built at import time.
"""

from __future__ import annotations

import json

import gradio as gr

from lima import paper
from lima.service_client import ServiceClient, ServiceProblem
from ui import chat_tab, compare_tab, pickers, ratings_tab, report_tab, retrain_tab

# The rating is the product's core act: Gradio shows custom feedback labels only after a click on
# a flag icon, so the flag is hidden and the paper's three labels are always shown as buttons,
# the chosen one (Gradio marks it bold) filled in its colour.
CSS = """
.follow-up { flex-grow: 0 !important; }
.extra-feedback button[aria-label='Feedback'] { display: none !important; }
.extra-feedback-options { display: flex !important; position: static !important; flex-direction: row !important;
                          padding: 0 !important; gap: 6px !important; }
.extra-feedback-option { font-size: var(--text-sm) !important; padding: 2px 10px !important; cursor: pointer; }
.extra-feedback-option:hover { border-color: var(--color-accent) !important; }
.extra-feedback-option[style*='bold'] { color: white !important; }
.extra-feedback-option[data-label='Fail'][style*='bold'] { background: #dc2626 !important; border-color: #dc2626 !important; }
.extra-feedback-option[data-label='Pass'][style*='bold'] { background: #2563eb !important; border-color: #2563eb !important; }
.extra-feedback-option[data-label='Excellent'][style*='bold'] { background: #16a34a !important; border-color: #16a34a !important; }
#service-status:empty { display: none; }
"""

# Each label button gets the paper's definition as its tooltip and its name as data-label (for
# the colours above), also on the buttons Gradio adds as replies stream in.
JS = """
() => {
  const definitions = %s;
  const mark = () => document.querySelectorAll('button.extra-feedback-option').forEach((button) => {
    const label = button.textContent.trim();
    if (definitions[label] && button.dataset.label !== label) {
      button.dataset.label = label;
      button.title = `${label}: ${definitions[label]}`;
    }
  });
  new MutationObserver(mark).observe(document.body, {childList: true, subtree: true});
  mark();
}
""" % json.dumps(paper.DEFINITIONS)


def warmup_banner(health: dict) -> str:
    """What the page says while the service loads its models ("" once it is ready)."""
    stages = health.get("loading") or {}
    if health.get("status") != "loading" or not stages:
        return ""
    doing = "; ".join(f"**{name}**: {stage}" for name, stage in stages.items())
    return (f"⏳ **Warming up** ({health.get('loading_seconds') or 0} s): {doing}. "
            "Replies from a model start once it has loaded.")


def build_app(service_url: str, api_key: str | None = None) -> gr.Blocks:
    client = ServiceClient(service_url, api_key)
    with gr.Blocks(title="LIMA Studio") as app:
        browser = gr.BrowserState({}, storage_key="lima-studio")
        gr.Markdown("# LIMA Studio\nChat with your model, rate every turn, retrain, compare.")
        service_status = gr.Markdown(elem_id="service-status")
        warming = gr.Timer(1.0)
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                chat = chat_tab.build(client, browser)
            with gr.Tab("Compare", id="compare") as compare_page:
                compare = compare_tab.build(client)
            with gr.Tab("Retrain", id="retrain") as retrain_page:
                retrain = retrain_tab.build(service_url, api_key)
            with gr.Tab("Ratings", id="ratings") as ratings_page:
                ratings = ratings_tab.build()
            with gr.Tab("Report", id="report") as report_page:
                report = report_tab.build()
        for fn, inputs, outputs in (chat["restore"], compare["load"], compare["proof"], retrain["load"],
                                    ratings["load"]):
            app.load(fn, inputs, outputs)
        compare_page.select(*compare["load"])
        compare_page.select(*compare["proof"])
        retrain_page.select(*retrain["load"])  # ratings given in the Chat tab meanwhile are counted
        ratings_page.select(*ratings["load"])
        report_page.select(*report["load"])

        saw_loading = gr.State(False)

        def on_tick(current_model, was_loading, *compare_picks):
            """While the service loads its models: say what it is doing. Once it is ready, stop, and
            if the page opened before the models were in, list them now (else the lists are current
            and a choice made meanwhile stays)."""
            keep = (gr.skip(),) * 4
            try:
                banner = warmup_banner(client.health())
            except ServiceProblem as problem:
                return f"⚠ {problem}", gr.Timer(active=True), was_loading, *keep
            if banner:
                return banner, gr.Timer(active=True), True, *keep
            if not was_loading:
                return "", gr.Timer(active=False), False, *keep
            return ("", gr.Timer(active=False), False, pickers.model_choices(client, current_model),
                    *compare["load"][0](*compare_picks))

        warming.tick(on_tick, [chat["model"], saw_loading, *compare["load"][1]],
                     [service_status, warming, saw_loading, chat["model"], *compare["load"][2]],
                     show_progress="hidden")
    return app
