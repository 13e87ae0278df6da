"""The side-by-side report from a fixture database with known counts: exact numbers and intervals."""

import subprocess

import pytest

from evaluation import report as reports
from evaluation.stats import tie_discounted_accuracy, wilson
from lima.store import connect
from tests.helpers.comparisons import comparison, conversation
from lima.children import lima_command


@pytest.fixture
def rated(lima_home):
    db = connect()
    z1 = conversation(db, "lima-zero-shot", [("q1", "a", "Excellent"), ("q2", "b", "Fail"), ("q3", "c", "Pass")])
    d1 = conversation(db, "lima-dialogue", [("q1", "a", "Excellent"), ("q2", "b", "Excellent"),
                                            ("q3", "c", "Excellent")])
    z2 = conversation(db, "lima-zero-shot", [("p1", "a", "Pass"), ("p2", "b", "Pass"), ("p3", "c", "Excellent"),
                                             ("p4", "d", "Fail")])
    d2 = conversation(db, "lima-dialogue", [("p1", "a", "Excellent"), ("p2", "b", "Pass")])
    conversation(db, "base", [("free", "x", "Fail")], opener=None, source="chat")
    comparison(db, "lima-zero-shot", "lima-dialogue", z1, d1, "right")
    comparison(db, "lima-zero-shot", "lima-dialogue", z2, d2, "tie")
    return db


def test_wilson_intervals_hand_checked():
    assert wilson(0, 0) == (0.0, 0.0)  # no ratings: no division by zero
    assert [round(x, 4) for x in wilson(2, 7)] == [0.0822, 0.6411]
    assert [round(x, 4) for x in wilson(1, 5)] == [0.0362, 0.6245]
    assert [round(x, 4) for x in wilson(4, 5)] == [0.3755, 0.9638]
    assert [round(x, 4) for x in wilson(0, 5)] == [0.0, 0.4345]


def test_tie_discounted_accuracy_hand_checked():
    pairs = [("left", "left"), ("left", "tie"), ("left", "right"), ("tie", "tie"), ("right", "tie")]
    assert tie_discounted_accuracy(pairs) == (1 + 0.5 + 0 + 1 + 0.5) / 5
    assert tie_discounted_accuracy([]) is None


def test_figures_per_model(rated):
    built = reports.build(rated)
    stats = {m.model: m for m in built.models}
    zero, dialogue = stats["lima-zero-shot"], stats["lima-dialogue"]
    assert zero.counts == {"Excellent": 2, "Fail": 2, "Pass": 3} and zero.turns == 7
    assert dialogue.counts == {"Excellent": 4, "Pass": 1} and dialogue.turns == 5
    assert zero.first_fail == [2, 4] and dialogue.first_fail == [None, None]
    assert zero.failed_within(3) == 1 and zero.conversations == 2
    p, low, high = zero.share("Fail")
    assert (round(p, 4), round(low, 4), round(high, 4)) == (0.2857, 0.0822, 0.6411)
    [tally] = built.verdicts
    assert (tally.left, tally.right, tally.tie, tally.total) == (0, 1, 1, 2)
    assert tally.sentence() == "lima-dialogue better in 1 of 2, lima-zero-shot better in 0, tied in 1"
    assert stats["base"].turns == 1
    only_openers = {m.model for m in reports.build(rated, openers_only=True).models}
    assert only_openers == {"lima-zero-shot", "lima-dialogue"}


def test_markdown_has_our_numbers_beside_the_papers(rated):
    text = reports.markdown(reports.build(rated))
    assert "| metric | `lima-zero-shot` | paper, zero-shot (1,000) | `lima-dialogue` | paper, dialogue (1,030) | `base` |" \
        in text
    assert "| Fail turns | 2 of 7 | 15 of 42 | 0 of 5 | 1 of 46 | 1 of 1 |" in text
    assert "28.6% [8.2, 64.1]" in text  # zero-shot Fail with its interval
    assert "45.2%" in text and "76.1%" in text
    assert "turn 2: 1, turn 4: 1 (failed within 3 turns: 1 of 2)" in text
    assert "never: 2 (failed within 3 turns: 0 of 2)" in text
    assert "- lima-dialogue better in 1 of 2, lima-zero-shot better in 0, tied in 1" in text
    assert "paper: dialogue better in 7 of 10 conversations, tied in 3" in text
    assert "![Fail / Pass / Excellent per model](ratings.png)" in text


def test_no_ratings_yet_says_so(lima_home, tmp_path):
    built = reports.build(connect())
    assert built.empty
    md, chart, more = reports.write(built, tmp_path)
    assert chart is None and more == [] and "No rated turns yet" in md.read_text()
    assert "No leaderboard: no verdicts yet." in md.read_text() and "No agreement figures: no ratings" in md.read_text()


def test_cli_prints_the_table_and_writes_markdown_and_png(rated, tmp_path):
    out = tmp_path / "report"
    result = subprocess.run([*lima_command(), "report", "--out", str(out)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "| Fail turns |" in result.stdout and f"written: {out / 'report.md'}" in result.stdout
    assert (out / "ratings.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ratings.png" in (out / "report.md").read_text()
