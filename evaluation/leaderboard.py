"""Every model on one leaderboard: Bradley-Terry strengths from the whole-conversation verdicts,
with 95% bootstrap intervals, people and each judge apart.

A verdict is one game between the two models of a comparison (side by side, replay, before and
after, experiment). A tie counts as the paper counts it, half a win to each side: every decisive
verdict enters the fit twice, a tie once each way. Strengths come from ``choix`` (Luce spectral
ranking, lightly regularised so that a model that never lost stays finite), on a log-odds scale
centred on the models' mean: a difference of 1 means winning about 73% of the time. The interval
of each strength, and of each difference between two models, is the 2.5-97.5 percentile range over
verdicts resampled with replacement; a difference whose interval excludes 0 is called significant,
from 10 verdicts on (a resample of fewer hardly varies, so their intervals are not to be read).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

BOOTSTRAP = 500
REGULARISATION = 0.01  # choix's alpha: keeps an unbeaten model's strength finite
FEW = 10  # under this many verdicts, the board says how few


@dataclass(frozen=True)
class Game:
    left: str
    right: str
    verdict: str  # left | right | tie


@dataclass
class Row:
    model: str
    strength: float
    low: float
    high: float
    games: int
    wins: int
    ties: int
    losses: int


@dataclass
class Board:
    source: str  # "people" or "judge:<model>"
    rows: list[Row] = field(default_factory=list)  # strongest first
    significant: list[tuple[str, str, float, float, float]] = field(default_factory=list)  # (better, worse, diff, low, high)
    games: int = 0
    note: str = ""  # why there is no board, or how few verdicts it rests on

    @property
    def empty(self) -> bool:
        return not self.rows


def _strengths(models: list[str], games: list[Game]) -> np.ndarray:
    import choix

    index = {m: i for i, m in enumerate(models)}
    data = []
    for game in games:
        a, b = index[game.left], index[game.right]
        if game.verdict == "left":
            data += [(a, b), (a, b)]
        elif game.verdict == "right":
            data += [(b, a), (b, a)]
        else:
            data += [(a, b), (b, a)]
    strengths = choix.ilsr_pairwise(len(models), data, alpha=REGULARISATION)
    return strengths - strengths.mean()


def fit(games: list[Game], source: str, bootstrap: int = BOOTSTRAP, seed: int = 0) -> Board:
    """The leaderboard of ``games`` (all from one source)."""
    board = Board(source, games=len(games))
    models = sorted({m for g in games for m in (g.left, g.right)})
    if len(models) < 2:
        board.note = ("no verdicts yet" if not games else
                      f"only one model has verdicts ({models[0]}): a leaderboard needs two")
        return board
    point = _strengths(models, games)
    rng = np.random.default_rng(seed)
    draws = np.array([_strengths(models, [games[i] for i in rng.integers(0, len(games), len(games))])
                      for _ in range(bootstrap)])
    low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    tally = {m: Counter() for m in models}
    for g in games:
        for side, model in (("left", g.left), ("right", g.right)):
            tally[model]["ties" if g.verdict == "tie" else "wins" if g.verdict == side else "losses"] += 1
    board.rows = sorted((Row(m, float(point[i]), float(low[i]), float(high[i]), sum(tally[m].values()),
                             tally[m]["wins"], tally[m]["ties"], tally[m]["losses"]) for i, m in enumerate(models)),
                        key=lambda r: -r.strength)
    if len(games) < FEW:  # a resample of a handful of verdicts hardly varies: no difference is called
        board.note = (f"only {len(games)} verdict{'s' * (len(games) != 1)}: the intervals are wide, and no "
                      "ranking should be read from them yet")
        return board
    order = {m: i for i, m in enumerate(models)}
    for k, better in enumerate(board.rows):
        for worse in board.rows[k + 1:]:
            diffs = draws[:, order[better.model]] - draws[:, order[worse.model]]
            d_low, d_high = np.percentile(diffs, [2.5, 97.5])
            if d_low > 0:
                board.significant.append((better.model, worse.model, better.strength - worse.strength,
                                          float(d_low), float(d_high)))
    return board


def games(db) -> dict[str, list[Game]]:
    """Every verdict, by source: "people" (the Compare tab's, a replay's, a before-and-after's) and
    "judge:<model>" for each judge that compared whole conversations (``lima judge``, ``lima experiment``)."""
    from evaluation import pairwise
    from lima.store import comparisons

    every = {row.id: row for row in comparisons.every(db)}
    found = {"people": [Game(r.left_model, r.right_model, r.verdict) for r in every.values()
                        if r.verdict and r.left_model != r.right_model]}
    for judge, verdicts in pairwise.conversation_verdicts(db).items():
        found[f"judge:{judge}"] = [Game(every[c].left_model, every[c].right_model, v) for c, v in verdicts
                                   if c in every and every[c].left_model != every[c].right_model]
    return found


def boards(db) -> list[Board]:
    """One leaderboard per source, people first."""
    return [fit(found, source) for source, found in games(db).items()]


def win_probability(difference: float) -> float:
    """What a strength difference means: the chance the stronger model wins a decisive verdict."""
    return 1 / (1 + math.exp(-difference))


def markdown(board: Board) -> list[str]:
    """The board as Markdown lines (a sentence instead when there is none)."""
    title = "people" if board.source == "people" else f"the judge `{board.source.removeprefix('judge:')}`"
    lines = [f"### Verdicts by {title}", ""]
    if board.empty:
        return lines + [f"No leaderboard: {board.note}.", ""]
    if board.note:
        lines += [f"> {board.note}.", ""]
    lines += ["| rank | model | strength (95% CI) | verdicts | won | tied | lost |", "|---|---|---|---|---|---|---|"]
    for k, r in enumerate(board.rows, start=1):
        lines.append(f"| {k} | `{r.model}` | {r.strength:+.2f} [{r.low:+.2f}, {r.high:+.2f}] | {r.games} | "
                     f"{r.wins} | {r.ties} | {r.losses} |")
    lines.append("")
    if board.significant:
        lines += [f"- `{a}` is stronger than `{b}`: difference {d:+.2f} [{lo:+.2f}, {hi:+.2f}], wins about "
                  f"{100 * win_probability(d):.0f}% of decisive verdicts" for a, b, d, lo, hi in board.significant]
    elif board.games < FEW:
        lines.append(f"- too few verdicts to call any difference significant (fewer than {FEW})")
    else:
        lines.append("- no difference between two models is significant at 95%")
    return lines + [""]


def draw(boards: list[Board], path):
    """Strengths with their intervals, one panel per source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [b for b in boards if not b.empty]
    if not shown:
        return None
    height = max(len(b.rows) for b in shown) * 0.45 + 1.4
    fig, axes = plt.subplots(1, len(shown), figsize=(6 * len(shown), height), squeeze=False)
    for ax, board in zip(axes[0], shown):
        rows = board.rows[::-1]
        y = range(len(rows))
        ax.errorbar([r.strength for r in rows], y, xerr=[[r.strength - r.low for r in rows],
                                                         [r.high - r.strength for r in rows]],
                    fmt="o", color="#2563eb", capsize=4)
        ax.set_yticks(list(y), [f"{r.model} (n={r.games})" for r in rows])
        ax.axvline(0, color="#999", lw=0.8)
        ax.set_xlabel("Bradley-Terry strength (log-odds), 95% bootstrap interval")
        ax.set_title("people" if board.source == "people" else board.source)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
