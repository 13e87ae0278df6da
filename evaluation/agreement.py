"""How far the raters agree, on the turns two or more of them rated: Krippendorff's alpha for the
ordinal scale Fail < Pass < Excellent (the ``krippendorff`` package), over everyone and per pair of
raters, with 95% bootstrap intervals over the shared turns, beside the share of shared turns given
the same label (the paper reports crowd-crowd 82% and crowd-GPT-4 78% on its pairwise protocol).

People and judges are raters alike here (a judge's ratings carry the name ``judge:<model>``), so
a judge that rated the turns people rated is measured against them. Alpha is 1 for raters who
always agree, about 0 for one who answers at random, below 0 for systematic disagreement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from evaluation.stats import tie_discounted_accuracy, wilson
from lima.paper import LABELS

LEVEL = {label: k for k, label in enumerate(LABELS)}  # the paper's order: Fail < Pass < Excellent
BOOTSTRAP = 500
FEW = 20  # under this many shared turns, the figures come with a sentence saying how few


@dataclass
class Pair:
    a: str
    b: str
    shared: int
    same: int  # turns both gave the same label
    alpha: float | None
    low: float | None
    high: float | None
    confusion: list[list[int]]  # rows: a's label, columns: b's label, Fail / Pass / Excellent
    preferences: int = 0  # pairs of replies (two sides of a comparison) both raters rated on both sides
    preference_agreement: float | None = None  # the paper's tie-discounted accuracy over them

    @property
    def agreement(self) -> tuple[float, float, float]:
        low, high = wilson(self.same, self.shared)
        return self.same / self.shared, low, high


@dataclass
class Agreement:
    raters: list[str] = field(default_factory=list)  # those who share a turn with another rater
    shared: int = 0  # turns rated by two raters or more
    alpha: float | None = None
    low: float | None = None
    high: float | None = None
    pairs: list[Pair] = field(default_factory=list)  # most shared turns first
    note: str = ""

    @property
    def empty(self) -> bool:
        return not self.pairs


def _alpha(matrix: np.ndarray) -> float | None:
    """Ordinal alpha of a raters x turns matrix (nan: not rated); None where it is undefined (one
    label only: nothing to disagree about)."""
    import krippendorff

    values = matrix[~np.isnan(matrix)]
    if len(np.unique(values)) < 2:
        return None
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal",
                                    value_domain=[0, 1, 2]))


def _interval(matrix: np.ndarray, rng, bootstrap: int) -> tuple[float | None, float | None]:
    draws = [_alpha(matrix[:, rng.integers(0, matrix.shape[1], matrix.shape[1])]) for _ in range(bootstrap)]
    draws = [d for d in draws if d is not None and not np.isnan(d)]
    if not draws:
        return None, None
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


def turn_pairs(db, rows=None) -> list[tuple[int, int]]:
    """(left reply, right reply) turn ids of every comparison (or of ``rows``), position by position."""
    from lima.store import chatlog, comparisons

    pairs = []
    for row in comparisons.every(db) if rows is None else rows:
        sides = [[t["id"] for t in chatlog.turns(db, c) if t["role"] == "assistant"]
                 for c in (row.left_conversation, row.right_conversation)]
        pairs += list(zip(*sides))
    return pairs


def _preference(left: int, right: int) -> str:
    return "tie" if left == right else "left" if left > right else "right"


def measure(ratings: list[dict], pairs: list[tuple[int, int]] = (), bootstrap: int = BOOTSTRAP,
            seed: int = 0) -> Agreement:
    """``ratings``: rows with ``turn_id``, ``rater``, ``label`` (``chatlog.ratings_by_rater``);
    ``pairs``: the two replies of a comparison at one position (``turn_pairs``), from which each
    rater's preference is read (the better label wins, equal labels tie) for the paper's measure."""
    by_turn: dict[int, dict[str, int]] = {}
    for row in ratings:
        if row["label"] in LEVEL:
            by_turn.setdefault(row["turn_id"], {})[row["rater"]] = LEVEL[row["label"]]
    raters = sorted({r for labels in by_turn.values() for r in labels})
    shared = {turn: labels for turn, labels in by_turn.items() if len(labels) >= 2}
    result = Agreement()
    if len(raters) < 2:
        result.note = ("no ratings with a rater's name yet" if not raters else
                       f"only one rater ({raters[0]}): agreement needs two raters on the same turns")
        return result
    if not shared:
        result.note = (f"{len(raters)} raters, but no turn was rated by two of them: rate the same "
                       "conversations (Ratings or Chat tab, or a judge over the same turns) to compare")
        return result
    result.raters = sorted({r for labels in shared.values() for r in labels})
    result.shared = len(shared)
    turns = sorted(shared)
    matrix = np.array([[shared[t].get(r, np.nan) for t in turns] for r in result.raters], dtype=float)
    rng = np.random.default_rng(seed)
    result.alpha = _alpha(matrix)
    if result.alpha is not None:
        result.low, result.high = _interval(matrix, rng, bootstrap)
    for a, b in combinations(result.raters, 2):
        both = [t for t in turns if a in shared[t] and b in shared[t]]
        if not both:
            continue
        pair_matrix = np.array([[shared[t][a] for t in both], [shared[t][b] for t in both]], dtype=float)
        confusion = [[0] * 3 for _ in range(3)]
        for t in both:
            confusion[shared[t][a]][shared[t][b]] += 1
        alpha = _alpha(pair_matrix)
        low, high = _interval(pair_matrix, rng, bootstrap) if alpha is not None else (None, None)
        preferred = [(_preference(by_turn[l][a], by_turn[r][a]), _preference(by_turn[l][b], by_turn[r][b]))
                     for l, r in pairs if all(x in by_turn.get(t, {}) for t in (l, r) for x in (a, b))]
        result.pairs.append(Pair(a, b, len(both), sum(shared[t][a] == shared[t][b] for t in both),
                                 alpha, low, high, confusion, len(preferred), tie_discounted_accuracy(preferred)))
    result.pairs.sort(key=lambda p: -p.shared)
    if result.shared < FEW:
        result.note = (f"only {result.shared} turn{'s' * (result.shared != 1)} rated by two raters or more: "
                       "the intervals are wide")
    return result


def _alpha_cell(alpha, low, high) -> str:
    if alpha is None:
        return "undefined (one label only)"
    return f"{alpha:.2f} [{low:.2f}, {high:.2f}]" if low is not None else f"{alpha:.2f}"


def markdown(result: Agreement) -> list[str]:
    lines = ["## Rater agreement", ""]
    if result.empty:
        return lines + [f"No agreement figures: {result.note}.", ""]
    if result.note:
        lines += [f"> {result.note}.", ""]
    lines += [f"Krippendorff's alpha (ordinal, {len(result.raters)} raters, {result.shared} shared turns): "
              f"{_alpha_cell(result.alpha, result.low, result.high)}", "",
              "| raters | shared turns | same label (95% CI) | alpha (95% CI) | pairwise agreement (pairs) |",
              "|---|---|---|---|---|"]
    for p in result.pairs:
        share, low, high = p.agreement
        paper = f"{100 * p.preference_agreement:.0f}% ({p.preferences})" if p.preferences else "n/a (0)"
        lines.append(f"| {p.a} · {p.b} | {p.shared} | {100 * share:.0f}% [{100 * low:.0f}, {100 * high:.0f}] | "
                     f"{_alpha_cell(p.alpha, p.low, p.high)} | {paper} |")
    return lines + ["", "Pairwise agreement is the paper's tie-discounted accuracy (section 4.1) on which of two "
                    "replies in a comparison each rater rated higher; the paper: crowd-crowd 82%, crowd-GPT-4 78%.", ""]


def draw(result: Agreement, path):
    """The confusion matrix of the pair of raters with the most shared turns."""
    if result.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pair = result.pairs[0]
    counts = np.array(pair.confusion)
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.imshow(counts, cmap="Blues")
    for i in range(3):
        for j in range(3):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center",
                    color="white" if counts[i, j] > counts.max() / 2 else "black")
    names = list(LEVEL)
    ax.set_xticks(range(3), names)
    ax.set_yticks(range(3), names)
    ax.set_xlabel(pair.b)
    ax.set_ylabel(pair.a)
    ax.set_title(f"{pair.shared} shared turns, {100 * pair.same / pair.shared:.0f}% same label")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
