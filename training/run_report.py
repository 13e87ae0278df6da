"""`lima runs show RUN`: a run's record and its model's behaviour beside its parent's, with a chart.

    lima runs show 20261202-220000-dialogue-ab12       # prints the table, writes behaviour.png

The figures are those ``training/behaviour.py`` stored when the run ended; the chart
(``$LIMA_HOME/runs/<run>/behaviour.png``, or ``--chart PATH``) puts the two models side by side.
The Retrain tab shows the same table and chart.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lima import home
from lima.store import behaviour as store, connect
from lima.store.behaviour import Measured
from lima.store import runs

COLORS = {"parent": "#9aa5b1", "model": "#2f6fdf"}

# (label, how to read it off Figures, as a percentage)
ROWS = [
    ("replies", lambda f: f.replies, False),
    ("ended by themselves", lambda f: f.ended, True),
    ("median length (tokens)", lambda f: f.median_tokens, False),
    ("90th percentile length (tokens)", lambda f: f.p90_tokens, False),
    ("replies with a loop", lambda f: f.loops, True),
    ("P(end of turn) at reference ends", lambda f: f.p_end, False),
    ("P(EOT) at reference ends", lambda f: f.p_eot, False),
    ("judge's mean helpfulness (1-6)", lambda f: f.judge_mean, False),
]


def cell(value, percent: bool) -> str:
    if value is None:
        return "n/a"
    if percent:
        return f"{100 * value:.0f}%"
    return f"{value:.3f}" if isinstance(value, float) and value < 1 else f"{value:g}"


def table(measured: dict[str, Measured]) -> str:
    """The figures as a Markdown table, parent beside model."""
    parent, model = measured.get("parent"), measured.get("model")
    head = f"| | {parent.model if parent else 'parent'} (parent) | {model.model if model else 'new model'} (new) |"
    lines = [head, "|---|---|---|"]
    for label, read, percent in ROWS:
        values = [cell(read(m.figures), percent) if m else "n/a" for m in (parent, model)]
        if all(v == "n/a" for v in values):
            continue
        lines.append(f"| {label} | {values[0]} | {values[1]} |")
    cap = (model or parent).figures.max_new_tokens if (model or parent) else None
    if cap:
        lines.append(f"\nReplies capped at {cap} new tokens; a reply that reaches the cap did not end by itself.")
    if parent and parent.measured_in and parent.measured_in != model_run(measured):
        lines.append(f"The parent's figures were measured in run {parent.measured_in} (same prompts and settings).")
    return "\n".join(lines)


def model_run(measured: dict[str, Measured]) -> str | None:
    model = measured.get("model")
    return model.measured_in if model else None


def draw(measured: dict[str, Measured], path: Path) -> Path:
    """Four panels, parent and new model side by side: ended, loops, length, end probabilities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # (title, bars, how a value is written)
    panels = [("ended by themselves (%)", [("ended", lambda f: _pct(f.ended))], "{:.0f}"),
              ("replies with a loop (%)", [("loops", lambda f: _pct(f.loops))], "{:.0f}"),
              ("reply length (tokens)", [("median", lambda f: f.median_tokens), ("p90", lambda f: f.p90_tokens)],
               "{:.0f}"),
              ("at reference answer ends", [("P(end)", lambda f: f.p_end), ("P(EOT)", lambda f: f.p_eot)], "{:.2f}")]
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 3.2))
    roles = [r for r in store.ROLES if r in measured]
    width = 0.8 / max(len(roles), 1)
    for ax, (title, bars, written) in zip(axes, panels):
        for j, role in enumerate(roles):
            values = [read(measured[role].figures) for _, read in bars]
            xs = [i + (j - (len(roles) - 1) / 2) * width for i in range(len(bars))]
            ax.bar(xs, [v or 0 for v in values], width, color=COLORS[role],
                   label=f"{measured[role].model} ({'parent' if role == 'parent' else 'new'})")
            for x, v in zip(xs, values):
                ax.text(x, v or 0, "n/a" if v is None else written.format(v), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(bars)), [name for name, _ in bars])
        ax.set_title(title, fontsize=10)
        if "%" in title:
            ax.set_ylim(0, 110)
    axes[-1].set_ylim(0, 1.1)
    axes[0].legend(loc="upper center", bbox_to_anchor=(2.3, -0.12), ncol=2, frameon=False)
    fig.subplots_adjust(wspace=0.35)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _pct(value: float | None) -> float | None:
    return None if value is None else 100 * value


def chart_path(run_id: str) -> Path:
    return home.runs_dir() / run_id / "behaviour.png"


def describe(record: runs.Run) -> str:
    """The run's record in a few lines."""
    stage = record.stage or "sft"
    start = record.from_model or record.base
    lines = [f"run {record.id}: {record.status} · {record.variant} · {stage} · preset {record.preset}",
             f"started from {start}; {record.examples} examples; step {record.step or 0}/"
             f"{record.max_steps or '?'}" + (f"; loss {record.loss:.3f}" if record.loss is not None else "")]
    if record.model_name:
        lines.append(f"model {record.model_name} -> {record.model_path} ({record.selection or ''})")
    if record.error:
        lines.append(f"reason: {record.error}")
    if record.warning:
        lines.append(f"⚠ {record.warning}")
    return "\n".join(lines)


def main(args) -> int:
    db = connect()
    record = runs.find(db, args.run_id)
    if record is None:
        print(f"lima runs show: there is no run {args.run_id} (see `lima runs list`)", file=sys.stderr)
        return 1
    print(describe(record))
    measured = store.for_run(db, args.run_id)
    if not measured:
        print("\nno behaviour figures: the run did not get to measuring its model")
        return 0
    print("\n" + table(measured))
    path = draw(measured, Path(args.chart) if args.chart else chart_path(args.run_id))
    print(f"\nchart: {path}")
    return 0


def add_arguments(parser) -> None:
    parser.add_argument("run_id", metavar="RUN")
    parser.add_argument("--chart", help="where to write the chart (default: $LIMA_HOME/runs/RUN/behaviour.png)")

