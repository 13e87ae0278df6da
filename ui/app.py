"""The Gradio workbench: Chat, Compare, Retrain, Ratings and Report tabs over one chat service.

``build_app(service_url)`` returns the Blocks; ``ui.launch`` runs it (``lima up``). Nothing is
built at import time.
"""

from __future__ import annotations

import gradio as gr

from ui import chat_tab, compare_tab, ratings_tab, report_tab, retrain_tab
from lima.service_client import ServiceClient

CSS = ".follow-up { flex-grow: 0 !important; }"


def build_app(service_url: str, api_key: str | None = None) -> gr.Blocks:
    client = ServiceClient(service_url, api_key)
    with gr.Blocks(title="LIMA Studio") as app:
        browser = gr.BrowserState({}, storage_key="lima-studio")
        gr.Markdown("# LIMA Studio\nChat with your model, rate every turn, retrain, compare.")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                chat = chat_tab.build(client, browser)
            with gr.Tab("Compare", id="compare") as compare_page:
                compare = compare_tab.build(client)
            with gr.Tab("Retrain", id="retrain"):
                retrain = retrain_tab.build(service_url, api_key)
            with gr.Tab("Ratings", id="ratings") as ratings_page:
                ratings = ratings_tab.build()
            with gr.Tab("Report", id="report") as report_page:
                report = report_tab.build()
        for fn, inputs, outputs in (chat["restore"], compare["load"], retrain["load"], ratings["load"]):
            app.load(fn, inputs, outputs)
        compare_page.select(*compare["load"])
        ratings_page.select(*ratings["load"])
        report_page.select(*report["load"])
    return app
