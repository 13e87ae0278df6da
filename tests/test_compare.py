"""Compare sessions: linked conversations, blind sides, and verdicts stored in model terms."""

import pytest

from lima.store import chatlog, connect
from ui import compare_tab
from ui.service_client import ServiceProblem


def test_a_session_links_two_conversations(lima_home):
    session = compare_tab.start("lima-zero-shot", "lima-dialogue", False, "opener-04", "ana")
    row = connect()["comparisons"].get(session.comparison_id)
    assert (row["left_model"], row["right_model"], row["blind"], row["swapped"]) == \
        ("lima-zero-shot", "lima-dialogue", 0, 0)
    left = chatlog.conversation(connect(), row["left_conversation"])
    assert (left["model"], left["source"], left["opener_id"], left["rater"]) == \
        ("lima-zero-shot", "compare", "opener-04", "ana")
    assert session.title(0) == "A: lima-zero-shot" and session.title(1) == "B: lima-dialogue"


def test_blind_sides_are_shuffled_named_a_b_and_the_verdict_names_the_model(lima_home, monkeypatch):
    monkeypatch.setattr(compare_tab.random, "random", lambda: 0.1)  # the coin says: swap
    session = compare_tab.start("lima-zero-shot", "lima-dialogue", True, None, None)
    assert session.order == ("right", "left") and connect()["comparisons"].get(session.comparison_id)["swapped"] == 1
    assert (session.title(0), session.title(1)) == ("A", "B")  # names hidden until the verdict
    compare_tab.save_verdict(session, "first better", "ana")  # A, shown first, is the right model here
    assert connect()["comparisons"].get(session.comparison_id)["verdict"] == "right"
    assert session.title(0) == "A: lima-dialogue"  # revealed


@pytest.mark.parametrize("left, right, message", [("m", "m", "two different models"), ("", "m", "both models")])
def test_bad_pairs_are_refused(lima_home, left, right, message):
    with pytest.raises(ServiceProblem, match=message):
        compare_tab.start(left, right, False, None, None)


def test_a_verdict_needs_a_session_and_a_known_choice(lima_home):
    with pytest.raises(ServiceProblem, match="Start a comparison first"):
        compare_tab.save_verdict(compare_tab.Session(), "tie", None)
    session = compare_tab.start("a", "b", False, None, None)
    with pytest.raises(ServiceProblem, match="Choose one of"):
        compare_tab.save_verdict(session, "both great", None)
