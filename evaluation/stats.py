"""Proportions with 95% confidence intervals (Wilson score), and the paper's tie-discounted accuracy."""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval for successes/n; (0, 0) when n is 0 rather than a division by zero."""
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def tie_discounted_accuracy(pairs: list[tuple[str, str]]) -> float | None:
    """Agreement between two annotators' preferences (paper, section 4.1): 1 when they agree,
    0.5 when exactly one of them says tie, 0 when they prefer opposite sides."""
    if not pairs:
        return None
    score = 0.0
    for a, b in pairs:
        if a == b:
            score += 1
        elif "tie" in (a, b):
            score += 0.5
    return score / len(pairs)
