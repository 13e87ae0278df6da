"""The side-by-side report of section 6: did the dialogue chains help, and by how much?

    lima report [--out DIR] [--openers-only]

Per model: assistant turns rated, Excellent / Pass / Fail with 95% Wilson intervals, fails per
turns ("15 of 42"), and the turn at which each conversation first failed; the whole-conversation
verdicts of the Compare tab ("better in 7 of 10, tied in 3"); the paper's numbers beside ours;
judge agreement when a judge has run; every model that has verdicts on one leaderboard with
intervals (``evaluation/leaderboard.py``), and how far the raters agree
(``evaluation/agreement.py``). Written as Markdown with PNG charts beside it: stacked bars like
the paper's Figure 7, the leaderboard, and the confusion matrix of the two raters who share most.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from evaluation import agreement as agreements, leaderboard
from evaluation.stats import wilson
from lima import home
from lima.paper import DIALOGUE, SECTION_6 as PAPER, SECTION_6_VERDICT as PAPER_VERDICT, ZERO_SHOT
from lima.store import chatlog, comparisons, connect

COLORS = {"Fail": "#d9534f", "Pass": "#f0ad4e", "Excellent": "#5cb85c"}


@dataclass
class ModelStats:
    model: str
    counts: dict[str, int]
    conversations: int
    first_fail: list[int | None] = field(default_factory=list)  # per conversation: exchange number, or None

    @property
    def turns(self) -> int:
        return sum(self.counts.values())

    def share(self, label: str) -> tuple[float, float, float]:
        """(proportion, low, high) of turns with ``label``."""
        n = self.turns
        k = self.counts.get(label, 0)
        low, high = wilson(k, n)
        return (k / n if n else 0.0), low, high

    def failed_within(self, turns: int) -> int:
        return sum(1 for f in self.first_fail if f is not None and f <= turns)


@dataclass
class Verdicts:
    left_model: str
    right_model: str
    left: int = 0
    right: int = 0
    tie: int = 0

    @property
    def total(self) -> int:
        return self.left + self.right + self.tie

    def add(self, verdict: str) -> None:
        """Count one verdict, 'left', 'right' or 'tie' (in terms of this pair's models)."""
        setattr(self, verdict, getattr(self, verdict) + 1)

    def sentence(self) -> str:
        """From the right model's side, as the paper words it for the dialogue model."""
        return (f"{self.right_model} better in {self.right} of {self.total}, {self.left_model} better in "
                f"{self.left}, tied in {self.tie}")


@dataclass
class Report:
    models: list[ModelStats]
    verdicts: list[Verdicts]
    agreement: dict | None = None
    openers_only: bool = False
    boards: list[leaderboard.Board] = field(default_factory=list)
    raters: agreements.Agreement | None = None
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    title: str = "LIMA Studio: side-by-side report"
    scope: str | None = None  # what was counted, when not "all rated conversations"
    notes: list[str] = field(default_factory=list)  # said under the title, before the numbers
    when_empty: str = "No rated turns yet: rate replies in the Chat or Compare tab, then run the report again."

    @property
    def empty(self) -> bool:
        return not any(m.turns for m in self.models)


def first_fail(turns: list[dict]) -> int | None:
    """The exchange (1-based) whose assistant turn is first rated Fail; None if none failed."""
    exchange = 0
    for turn in turns:
        if turn["role"] != "assistant":
            continue
        exchange += 1
        if turn["rating"] == "Fail":
            return exchange
    return None


def tally(conversations: list[dict]) -> list[ModelStats]:
    """Per model, the ratings of its assistant turns (each turn's ``rating``) and where each
    conversation first failed; the paper's order first (zero-shot, then dialogue)."""
    counts: dict[str, Counter] = {}
    fails: dict[str, list[int | None]] = {}
    for conversation in conversations:
        rated = [t for t in conversation["turns"] if t["role"] == "assistant" and t["rating"]]
        for model in {t["model"] for t in rated}:
            own = [t for t in conversation["turns"] if t["model"] == model or t["role"] == "user"]
            fails.setdefault(model, []).append(first_fail(own))
        for turn in rated:
            counts.setdefault(turn["model"], Counter())[turn["rating"]] += 1
    order = sorted(counts, key=lambda m: ({ZERO_SHOT: 0, DIALOGUE: 1}.get(m, 2), m))
    return [ModelStats(m, dict(counts[m]), len(fails.get(m, [])), fails.get(m, [])) for m in order]


def count_verdicts(rows: list[comparisons.Comparison]) -> list[Verdicts]:
    """The people's whole-conversation verdicts, one ``Verdicts`` per pair of models, in the order
    the pairs first appear: the one place verdicts are counted."""
    tallies: dict[tuple[str, str], Verdicts] = {}
    for row in rows:
        if row.verdict:
            tallies.setdefault((row.left_model, row.right_model), Verdicts(row.left_model, row.right_model)).add(
                row.verdict)
    return list(tallies.values())


def build(db=None, openers_only: bool = False) -> Report:
    db = db or connect()
    models = tally(chatlog.all_conversations(db, openers_only))
    from evaluation import pairwise  # the judge's agreement with the raters, when a judge has run

    return Report(models, count_verdicts(comparisons.every(db, with_verdict=True)), pairwise.agreement(db),
                  openers_only, boards=leaderboard.boards(db),
                  raters=agreements.measure(chatlog.ratings_by_rater(db), agreements.turn_pairs(db)))


def _cell(stats: ModelStats, label: str) -> str:
    p, low, high = stats.share(label)
    return f"{100 * p:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"


def _paper_cell(model: str, label: str) -> str:
    paper = PAPER.get(model)
    if not paper:
        return "—"
    return f"{100 * paper[label] / paper['turns']:.1f}%" + (" (derived)" if label == "Pass" else "")


def _first_fail_cell(stats: ModelStats) -> str:
    spread = Counter("never" if f is None else f for f in stats.first_fail)
    order = sorted(k for k in spread if k != "never") + (["never"] if "never" in spread else [])
    parts = ", ".join(f"{'never' if k == 'never' else f'turn {k}'}: {spread[k]}" for k in order)
    return f"{parts} (failed within 3 turns: {stats.failed_within(3)} of {stats.conversations})"


def markdown(report: Report, chart: str | None = "ratings.png", links: bool = True) -> str:
    """The report as Markdown; ``chart`` the ratings chart's file name, ``links`` whether the other
    charts' files are linked (they are, beside report.md)."""
    scope = report.scope or ("opener conversations only" if report.openers_only else "all rated conversations")
    lines = [f"# {report.title}", "", f"{report.created}; {scope}.", ""]
    lines += [f"> {note}\n" for note in report.notes]
    if report.empty:
        return "\n".join(lines + [report.when_empty, ""] + extras(report, links)) + "\n"
    header, rule = ["", *[]], []
    columns: list[tuple[str, ModelStats | None, str | None]] = []
    for stats in report.models:
        columns.append((f"`{stats.model}`", stats, None))
        if stats.model in PAPER:
            columns.append((PAPER[stats.model]["label"], None, stats.model))
    header = ["metric"] + [c[0] for c in columns]
    rows = [["assistant turns rated"] + [str(s.turns) if s else str(PAPER[p]["turns"]) for _, s, p in columns]]
    for label in ("Excellent", "Pass", "Fail"):
        rows.append([f"{label} (95% CI)"] + [_cell(s, label) if s else _paper_cell(p, label) for _, s, p in columns])
    rows.append(["Fail turns"] + [f"{s.counts.get('Fail', 0)} of {s.turns}" if s else
                                  f"{PAPER[p]['Fail']} of {PAPER[p]['turns']}" for _, s, p in columns])
    rows.append(["conversations"] + [str(s.conversations) if s else str(PAPER[p]["conversations"])
                                     for _, s, p in columns])
    rows.append(["first Fail at"] + [_first_fail_cell(s) if s else (PAPER[p]["note"] or "—") for _, s, p in columns])
    rule = ["---"] * len(header)
    lines += ["| " + " | ".join(r) + " |" for r in (header, rule, *rows)]
    lines += ["", "## Whole-conversation verdicts", ""]
    if report.verdicts:
        lines += [f"- {v.sentence()}" for v in report.verdicts]
    else:
        lines.append("- none yet: give a verdict at the end of a Compare-tab conversation")
    lines.append(f"- paper: {PAPER_VERDICT}")
    if report.agreement:
        a = report.agreement
        lines += ["", "## Judge", "",
                  f"- {a['judge']}: tie-discounted agreement with the raters' verdicts "
                  f"{_pct(a['conversation_agreement'])} over {a['conversations']} conversations; with the raters' "
                  f"turn preferences {_pct(a['turn_agreement'])} over {a['turns']} turn pairs; "
                  f"{a['unparsed']} judge replies unparsed (not counted)"]
    if chart:
        lines += ["", f"![Fail / Pass / Excellent per model]({chart})"]
    lines += extras(report, links)
    return "\n".join(lines) + "\n"


LEADERBOARD_PNG, AGREEMENT_PNG = "leaderboard.png", "agreement.png"


def extras(report: Report, charts: bool = True) -> list[str]:
    """The leaderboard and the rater agreement, with their charts' links when drawn."""
    lines = []
    if report.boards:
        lines += ["", "## Leaderboard", "", "Bradley-Terry strengths from the whole-conversation verdicts, "
                  "95% bootstrap intervals; a tie counts half a win to each side.", ""]
        for board in report.boards:
            lines += leaderboard.markdown(board)
        if charts and any(not b.empty for b in report.boards):
            lines += [f"![Leaderboard]({LEADERBOARD_PNG})", ""]
    if report.raters is not None:
        lines += [""] + agreements.markdown(report.raters)
        if charts and not report.raters.empty:
            lines += [f"![Confusion matrix of the two raters who share most turns]({AGREEMENT_PNG})", ""]
    return lines


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def draw(report: Report, path: Path) -> Path:
    """Stacked horizontal bars of Fail / Pass / Excellent shares, ours and the paper's (its Figure 7)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(s.model, s.counts, s.turns) for s in report.models if s.turns]
    bars += [(PAPER[m]["label"], PAPER[m], PAPER[m]["turns"]) for m in (ZERO_SHOT, DIALOGUE)]
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(bars) + 1.4))
    for row, (name, counts, total) in enumerate(bars):
        left = 0.0
        for label in ("Fail", "Pass", "Excellent"):
            share = 100 * counts.get(label, 0) / total
            ax.barh(row, share, left=left, color=COLORS[label], label=label if row == 0 else None)
            if share >= 6:
                ax.text(left + share / 2, row, f"{share:.0f}%", ha="center", va="center", fontsize=8)
            left += share
    ax.set_yticks(range(len(bars)), [f"{name} (n={total})" for name, _, total in bars])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of assistant turns")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(report: Report, out: Path) -> tuple[Path, Path | None, list[Path]]:
    """report.md, the ratings chart (None when nothing is rated) and the other charts drawn."""
    out.mkdir(parents=True, exist_ok=True)
    chart = None if report.empty else draw(report, out / "ratings.png")
    more = [leaderboard.draw(report.boards, out / LEADERBOARD_PNG),
            agreements.draw(report.raters, out / AGREEMENT_PNG) if report.raters else None]
    md = out / "report.md"
    md.write_text(markdown(report, chart.name if chart else None))
    return md, chart, [p for p in more if p]


def main(args) -> int:
    report = build(openers_only=args.openers_only)
    out = Path(args.out) if args.out else home.reports_dir() / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    md, chart, more = write(report, out)
    print(markdown(report, None, links=False))
    print(f"written: {md}" + "".join(f", {p}" for p in [chart, *more] if p))
    return 0


def add_arguments(parser) -> None:
    parser.add_argument("--out", help="folder for report.md and ratings.png (default: $LIMA_HOME/reports/<time>)")
    parser.add_argument("--openers-only", action="store_true", help="count only conversations started from an opener")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
