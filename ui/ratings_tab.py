"""The Ratings tab: Fail / Pass / Excellent per model as a chart and a table, and exports."""

from __future__ import annotations

from datetime import datetime, timezone

import gradio as gr
import pandas as pd

from dialogues import export, jsonl
from lima import paper
from lima import home
from lima.store import chatlog, connect


def summary(openers_only: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(long form for the stacked bar chart, one row per model for the table)."""
    counts = chatlog.rating_counts(connect(), openers_only)
    long = pd.DataFrame(counts, columns=["model", "label", "n"])
    rows = []
    for model, group in long.groupby("model", sort=True):
        by_label = dict(zip(group["label"], group["n"]))
        total = sum(by_label.values())
        row = {"model": model, "turns rated": total}
        for label in paper.LABELS:
            n = by_label.get(label, 0)
            row[label] = f"{n} ({100 * n / total:.1f}%)"
        rows.append(row)
    table = pd.DataFrame(rows, columns=["model", "turns rated", *paper.LABELS])
    long["label"] = pd.Categorical(long["label"], categories=list(paper.LABELS), ordered=True)
    return long.sort_values(["model", "label"]), table


def export_rated(openers_only: bool) -> str:
    """Every conversation with at least one rating, in the messages format with ratings."""
    records = []
    for c in chatlog.all_conversations(connect(), openers_only):
        if not any(t["rating"] for t in c["turns"]):
            continue
        records.append({"id": c["id"], "model": c["model"], "opener_id": c["opener_id"], "rater": c["rater"],
                        "created": c["created"], "messages": [
                            {"role": t["role"], "content": t["content"], "model": t["model"],
                             **({"rating": t["rating"]} if t["rating"] else {}),
                             **({"rewrite": t["rewrite"]} if t["rewrite"] else {})} for t in c["turns"]]})
    return str(jsonl.write(_export_path("rated-conversations"), records))


def export_as_chains(openers_only: bool) -> tuple[str, str]:
    chains, skipped = export.export_chains(chatlog.all_conversations(connect(), openers_only))
    path = jsonl.write(_export_path("dialogue-chains"), chains)
    return str(path), f"{len(chains)} chains exported; {len(skipped)} conversations left out (unrated, or a " \
                      "Fail turn without a rewrite, or a single exchange)"


def _export_path(kind: str):
    return home.home() / "exports" / f"{kind}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.jsonl"


def build() -> dict:
    with gr.Row():
        openers_only = gr.Checkbox(label="Opener conversations only", value=False)
        refresh = gr.Button("Refresh")
    chart = gr.BarPlot(x="model", y="n", color="label", title="Ratings per model", y_title="assistant turns",
                       color_map={"Fail": "#d9534f", "Pass": "#f0ad4e", "Excellent": "#5cb85c"}, height=300,
                       elem_id="ratings-chart")
    table = gr.Dataframe(interactive=False, elem_id="ratings-table")
    with gr.Row():
        rated = gr.Button("Export rated conversations (JSONL)")
        as_chains = gr.Button("Export as dialogue chains (JSONL)")
    note = gr.Markdown()
    download = gr.File(label="Export", interactive=False)

    refresh.click(summary, openers_only, [chart, table])
    openers_only.change(summary, openers_only, [chart, table])
    rated.click(lambda o: (export_rated(o), "rated conversations exported"), openers_only, [download, note])
    as_chains.click(export_as_chains, openers_only, [download, note])
    return {"load": (summary, openers_only, [chart, table])}
