"""The leaderboard and the rater agreement from fixture logs whose answers are known, and their
bad inputs: one model only, one rater only, no shared turns."""

import random
import subprocess

import pytest

from evaluation import agreement, leaderboard
from evaluation.leaderboard import Game
from lima.children import lima_command
from lima.store import chatlog, connect, judgments
from tests.helpers.comparisons import comparison, conversation


def test_a_model_that_always_wins_ranks_first_with_an_interval_that_excludes_the_others():
    games = ([Game("champ", "b", "left")] * 6 + [Game("c", "champ", "right")] * 6
             + [Game("b", "c", "left"), Game("b", "c", "right"), Game("b", "c", "tie")] * 3)
    board = leaderboard.fit(games, "people", bootstrap=300)
    first, *others = board.rows
    assert first.model == "champ" and (first.wins, first.ties, first.losses, first.games) == (12, 0, 0, 12)
    assert all(first.low > other.high for other in others)
    assert {(a, b) for a, b, *_ in board.significant} == {("champ", "b"), ("champ", "c")}
    assert abs(sum(r.strength for r in board.rows)) < 1e-9  # centred on the models' mean
    text = "\n".join(leaderboard.markdown(board))
    assert "| 1 | `champ` |" in text and "`champ` is stronger than `b`" in text and board.note == ""


def test_ties_count_half_a_win_each_and_even_models_are_not_told_apart():
    board = leaderboard.fit([Game("a", "b", "tie")] * 10 + [Game("a", "b", "left"), Game("a", "b", "right")] * 5,
                            "people", bootstrap=200)
    a, b = sorted(board.rows, key=lambda r: r.model)
    assert a.strength == pytest.approx(b.strength, abs=1e-6) and a.low < 0 < a.high
    assert board.significant == [] and "no difference between two models is significant" in "\n".join(
        leaderboard.markdown(board))


@pytest.mark.parametrize("games, said", [([], "no verdicts yet"),
                                         ([Game("a", "b", "left")] * 3, "only 3 verdicts")])
def test_few_or_no_verdicts_are_said(games, said):
    board = leaderboard.fit(games, "people", bootstrap=50)
    assert said in board.note and said in "\n".join(leaderboard.markdown(board))
    assert board.significant == []  # three straight wins are not evidence enough


def test_agreeing_raters_get_alpha_one_and_a_random_rater_about_zero():
    labels = ["Fail", "Pass", "Excellent"]
    rng = random.Random(0)
    fixed = [labels[rng.randrange(3)] for _ in range(300)]
    same = [{"turn_id": t, "rater": r, "label": fixed[t]} for t in range(300) for r in ("ana", "bo")]
    result = agreement.measure(same, bootstrap=100)
    assert result.alpha == pytest.approx(1.0) and result.shared == 300 and result.note == ""
    [pair] = result.pairs
    assert (pair.a, pair.b, pair.shared, pair.same, pair.alpha) == ("ana", "bo", 300, 300, pytest.approx(1.0))
    assert pair.confusion == [[fixed.count(l) if i == j else 0 for j in range(3)] for i, l in enumerate(labels)]

    noisy = [{"turn_id": t, "rater": "ana", "label": fixed[t]} for t in range(300)]
    noisy += [{"turn_id": t, "rater": "coin", "label": labels[rng.randrange(3)]} for t in range(300)]
    result = agreement.measure(noisy, bootstrap=200)
    assert abs(result.alpha) < 0.15 and result.low < 0 < result.high
    assert 0.2 < result.pairs[0].agreement[0] < 0.45  # a third by chance


@pytest.mark.parametrize("ratings, said", [
    ([], "no ratings with a rater's name yet"),
    ([{"turn_id": 1, "rater": "ana", "label": "Pass"}, {"turn_id": 2, "rater": "ana", "label": "Fail"}],
     "only one rater (ana)"),
    ([{"turn_id": 1, "rater": "ana", "label": "Pass"}, {"turn_id": 2, "rater": "bo", "label": "Fail"}],
     "no turn was rated by two of them"),
])
def test_one_rater_or_no_shared_turns_are_said_not_computed(ratings, said):
    result = agreement.measure(ratings)
    assert result.empty and said in result.note and said in "\n".join(agreement.markdown(result))


def test_ratings_by_rater_reads_each_raters_latest_label_and_leaves_cleared_ones_out(lima_home):
    db = connect()
    conv = conversation(db, "base", [("q", "a", "Pass"), ("q2", "b", None)])
    first, second = [t["id"] for t in chatlog.turns(db, conv) if t["role"] == "assistant"]
    chatlog.rate(db, first, "Fail", "bo")
    chatlog.rate(db, first, "Excellent", "bo")  # bo changed their mind: the latest counts
    chatlog.rate(db, second, "Pass", "bo")
    chatlog.rate(db, second, None, "bo")  # cleared
    chatlog.judge_rate(db, second, "Fail", "judge-x", "key")
    rows = {(r["turn_id"], r["rater"]): r["label"] for r in chatlog.ratings_by_rater(db)}
    assert rows == {(first, "rater"): "Pass", (first, "bo"): "Excellent", (second, "judge:judge-x"): "Fail"}


@pytest.fixture
def three_models_two_raters(lima_home):
    """dialogue beats zero-shot and base in every verdict; 'rater' and 'bo' rated the same turns."""
    db = connect()
    for k in range(6):
        for other in ("lima-zero-shot", "base"):
            a = conversation(db, other, [(f"q{k}", "meh", "Fail"), (f"r{k}", "ok", "Pass")])
            b = conversation(db, "lima-dialogue", [(f"q{k}", "good", "Excellent"), (f"r{k}", "fine", "Pass")])
            comparison(db, other, "lima-dialogue", a, b, "right")
            for conv in (a, b):
                for turn in chatlog.turns(db, conv):
                    if turn["role"] == "assistant":
                        chatlog.rate(db, turn["id"], "Excellent" if turn["content"] == "meh" and k % 3 == 0
                                     else turn["rating"], "bo")
            # the judge compared the same pair, and agreed
            for order, result in (("left-first", "B"), ("right-first", "A")):
                judgments.add(db, judgments.Judgment(f"{k}-{other}-{order}", "pairwise-conversation", "judge-x",
                                                     result, result, comparison_id=_latest(db), position=0,
                                                     order=order))
    return db


def _latest(db):
    from lima.store import comparisons

    return comparisons.every(db)[-1].id


def test_lima_report_prints_the_leaderboard_and_the_agreement_and_draws_both(three_models_two_raters, tmp_path):
    out = tmp_path / "report"
    result = subprocess.run([*lima_command(), "report", "--out", str(out)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "## Leaderboard" in text and "### Verdicts by people" in text and "### Verdicts by the judge `judge-x`" in text
    assert "| 1 | `lima-dialogue` |" in text and "`lima-dialogue` is stronger than `base`" in text
    assert "| bo · rater | 48 | 92% [" in text  # bo rated 4 of the 48 shared turns otherwise
    # the paper's measure on the 24 pairs of replies: bo saw a tie where rater preferred dialogue in 4
    assert f"| {(24 - 4 + 0.5 * 4) / 24 * 100:.0f}% (24) |" in text
    assert "Krippendorff's alpha (ordinal, 2 raters, 48 shared turns):" in text
    for png in ("ratings.png", "leaderboard.png", "agreement.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert "![Leaderboard](leaderboard.png)" in (out / "report.md").read_text()
