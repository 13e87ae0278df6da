"""The LLM judge against a local fake OpenAI-compatible server with scripted answers."""

import pytest

from evaluation import pairwise
import math

import openai
from openai.types.chat.chat_completion import ChoiceLogprobs
from openai.types.chat.chat_completion_token_logprob import ChatCompletionTokenLogprob, TopLogprob

from evaluation.experiment import _weighted_notes
from evaluation.judge import (Judge, JudgeUnavailable, choice_probabilities, parse_score, uncertainty,
                              weighted_rating)
from lima import paper
from lima.store import judgments
from lima.store import connect
from tests.helpers.comparisons import comparison, conversation
from tests.helpers.fake_judge import fake_judge, response
from lima.children import lima_command


def fair(system, user):
    """Prefers whichever response contains GOOD, wherever it is shown; scores GOOD 6, else 2."""
    if "helpfulness" in user or "6-point" in user:
        return "Score: 6\nSpot on." if "GOOD" in user else "Score: 2\nWeak."
    a, b = "GOOD" in response(user, "A"), "GOOD" in response(user, "B")
    return "A\nBetter." if a and not b else ("B\nBetter." if b and not a else "Neither\nSame.")


def biased(system, user):
    return "A" if "6-point" not in user else "Score: 4"


def garbage(system, user):
    return "I would rather not say."


@pytest.fixture
def session(lima_home):
    """One comparison: the right side's replies are GOOD on both turns; raters agree."""
    db = connect()
    left = conversation(db, "lima-zero-shot", [("q1", "meh", "Pass"), ("q2", "meh", "Fail")])
    right = conversation(db, "lima-dialogue", [("q1", "GOOD answer", "Excellent"), ("q2", "GOOD again", "Excellent")])
    comparison(db, "lima-zero-shot", "lima-dialogue", left, right, "right")
    return db


def judge(url, **kw):
    return Judge(url, "judge-model", **kw)


def test_parse_rules():
    assert pairwise.parse_choice("A\nbecause") == "A"
    assert pairwise.parse_choice("**B** is better") == "B"
    assert pairwise.parse_choice("Neither, both fine") == "tie"
    assert pairwise.parse_choice("The answer is A") == "unparsed"
    assert pairwise.combine("A", "B") == "left"  # left shown first wins, then left shown second wins
    assert pairwise.combine("A", "A") == "tie"  # position bias: disagreeing orders cancel
    assert pairwise.combine("B", "A") == "right"
    assert pairwise.combine("A", "unparsed") == "unparsed"
    assert parse_score("Score: 5\nGood") == 5 and parse_score("5") == 5 and parse_score("great!") is None


def test_fair_judge_both_orders_agreement_and_cache(session):
    with fake_judge(fair) as (url, requests):
        summary = pairwise.run(judge(url), db=session)
        asked = len(requests)
        again = pairwise.run(judge(url), db=session)
    # 1 conversation + 2 turns, each asked in both orders; 4 assistant turns scored once each
    assert summary["asked"] == asked == 3 * 2 + 4
    assert summary["verdicts"] == {"left": 0, "right": 1, "tie": 0, "unparsed": 0}
    a = summary["agreement"]
    assert (a["conversation_agreement"], a["turn_agreement"], a["conversations"], a["turns"]) == (1.0, 1.0, 1, 2)
    assert again["asked"] == 0 and again["reused"] == asked  # nothing asked twice
    swapped = [r for r in requests if "[Response A]" in r["messages"][1]["content"]]
    shown_first = [response(r["messages"][1]["content"], "A").strip() for r in swapped]
    assert "GOOD answer" in shown_first and "meh" in shown_first  # each side was shown first once
    scores = {row["turn_id"]: row["result"] for row in session["judgments"].rows_where("protocol = 'helpfulness'")}
    assert sorted(scores.values()) == ["2", "2", "6", "6"]


def test_position_biased_judge_yields_ties(session):
    with fake_judge(biased) as (url, _):
        summary = pairwise.run(judge(url), helpfulness=False, db=session)
    assert summary["verdicts"]["tie"] == 1
    a = summary["agreement"]
    assert a["conversation_agreement"] == 0.5 and a["turn_agreement"] == 0.5  # human said right, judge tie


def test_garbage_is_unparsed_not_a_verdict(session):
    with fake_judge(garbage) as (url, _):
        summary = pairwise.run(judge(url), db=session)
    assert summary["verdicts"] == {"left": 0, "right": 0, "tie": 0, "unparsed": 1}
    assert summary["agreement"]["unparsed"] == 3 and summary["agreement"]["conversations"] == 0
    assert {row["result"] for row in session["judgments"].rows_where("protocol = 'helpfulness'")} == {"None"}


def test_timeouts_are_retried_with_backoff_then_reported(session):
    calls = []

    def slow_then_fair(system, user):
        calls.append(1)
        return None if len(calls) <= 2 else fair(system, user)

    with fake_judge(slow_then_fair, stall_seconds=1.5) as (url, _):
        summary = pairwise.run(judge(url, timeout=0.5, retries=3), helpfulness=False, db=session)
    assert summary["verdicts"]["right"] == 1  # two timeouts, then retries got through
    with fake_judge(lambda s, u: None, stall_seconds=1.5) as (url, _):
        with pytest.raises(JudgeUnavailable, match=f"the judge at {url} is unreachable after 1 retries"):
            pairwise.run(judge(url, timeout=0.3, retries=1), db=session)


def test_different_turn_counts_are_judged_on_the_shared_turns(lima_home):
    db = connect()
    left = conversation(db, "a", [("q1", "GOOD", "Pass"), ("q2", "x", "Pass"), ("q3", "y", "Pass")])
    right = conversation(db, "b", [("q1", "meh", "Fail")])
    comparison(db, "a", "b", left, right, "left")
    with fake_judge(fair) as (url, _):
        summary = pairwise.run(judge(url), helpfulness=False, db=db)
    assert summary["mismatched"] == 1
    assert summary["agreement"]["turns"] == 1 and summary["agreement"]["turn_agreement"] == 1.0


def test_cli_reports_an_unreachable_judge(session):
    import subprocess

    from tests.helpers.server import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    result = subprocess.run([*lima_command(), "judge", "--url", url, "--model", "j",
                             "--retries", "0", "--timeout", "2"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and f"the judge at {url} is unreachable" in result.stderr


def test_a_question_the_judge_refuses_counts_as_unparsed_and_the_rest_go_on(lima_home):
    """A 400 for one question (too long for the judge's context) is that question's answer, stored
    and counted as unparsed, never a verdict; the next question is asked as usual."""
    def refuses_long(system, user):
        return 400 if "LONG" in user else "Pass\nFine."

    with fake_judge(refuses_long) as (url, requests):
        runner = pairwise.Runner(connect(), judge(url, retries=0))
        raw = runner.ask("paper-rating", "s", "LONG question", parse=lambda r: r.startswith("Pass"), turn_id=1)
        assert raw.startswith("[no answer: the judge refused the question") and "maximum context" in raw
        assert runner.ask("paper-rating", "s", "short question", parse=lambda r: r.startswith("Pass")) == "Pass\nFine."
        assert runner.ask("paper-rating", "s", "LONG question") == raw and len(requests) == 2  # stored, not re-asked
    stored = {row["raw"][:4]: row["result"] for row in connect()["judgments"].rows_where()}
    assert stored == {"[no ": "False", "Pass": "True"}


def first_token(*alternatives: tuple[str, float], lead: str = "") -> ChoiceLogprobs:
    """A reply's log probabilities: an optional blank token, then a token with these alternatives."""
    def token(text, alts):
        return ChatCompletionTokenLogprob(token=text, bytes=None, logprob=alts[0][1] if alts else 0.0,
                                          top_logprobs=[TopLogprob(token=t, bytes=None, logprob=v) for t, v in alts])
    return ChoiceLogprobs(content=([token(lead, [(lead, 0.0)])] if lead else []) +
                          [token(alternatives[0][0], list(alternatives))])


def test_label_probabilities_count_each_first_token_for_the_one_label_it_begins():
    found = choice_probabilities(first_token(("P", math.log(0.3)), ("Pass", math.log(0.2)), ("Ex", math.log(0.25)),
                                             (" fail", math.log(0.05)), ("The", math.log(0.2)), lead="\n"),
                                 list(paper.LABELS))
    # 'The' begins no label; the rest is normalised over the labels
    assert found == pytest.approx({"Fail": 0.0625, "Pass": 0.625, "Excellent": 0.3125})
    assert weighted_rating(found) == pytest.approx(0.0625 + 2 * 0.625 + 3 * 0.3125)
    assert choice_probabilities(first_token(("Sure", 0.0)), list(paper.LABELS)) is None
    assert choice_probabilities(None, list(paper.LABELS)) is None
    # an alternative that begins two answers counts for neither
    assert choice_probabilities(first_token(("N", math.log(0.5)), ("A", math.log(0.5))),
                                ["Neither", "No", "A"]) == {"Neither": 0.0, "No": 0.0, "A": 1.0}
    assert uncertainty({"Fail": 0.45, "Pass": 0.4, "Excellent": 0.15}) == "near tie"
    assert uncertainty({"Fail": 0.55, "Pass": 0.3, "Excellent": 0.15}) == "unsure"
    assert uncertainty({"Fail": 0.9, "Pass": 0.1, "Excellent": 0.0}) is None


def test_a_judge_on_this_service_gives_each_labels_probability(api, lima_home):
    client = openai.OpenAI(base_url="http://service/v1", api_key="unused", max_retries=0, http_client=api)
    judge = Judge("http://service/v1", "base", guided=True, max_tokens=8)
    runner = pairwise.Runner(connect(), judge)
    runner.client = client
    raw = runner.ask("paper-rating", "You rate replies.", "Rate this reply: 'hello'", choices=list(paper.LABELS),
                     parse=lambda r: r, turn_id=1)
    assert raw in paper.LABELS
    stored = judgments.of_protocol(connect(), "paper-rating")[0]
    assert set(stored.probabilities) == set(paper.LABELS)
    assert sum(stored.probabilities.values()) == pytest.approx(1.0)
    # the chosen label (greedy, token by token) has a real share of the probability
    assert stored.probabilities[raw] > 0.05


def test_an_endpoint_that_refuses_log_probabilities_is_asked_as_before(lima_home):
    with fake_judge(lambda system, user: "Pass\nFine.", refuse_logprobs=True) as (url, requests):
        runner = pairwise.Runner(connect(), judge(url, retries=0))
        assert runner.ask("paper-rating", "s", "q1", choices=list(paper.LABELS), parse=lambda r: r[:4]) == "Pass\nFine."
        assert runner.ask("paper-rating", "s", "q2", choices=list(paper.LABELS), parse=lambda r: r[:4]) == "Pass\nFine."
        # asked with log probabilities once, refused, then as before from then on
        assert [bool(r.get("logprobs")) for r in requests] == [True, False, False]
    assert [j.probabilities for j in judgments.of_protocol(connect(), "paper-rating")] == [None, None]
    with fake_judge(lambda system, user: "Pass") as (url, requests):  # gives none: same answer, no probabilities
        answer = judge(url, retries=0).answer("s", "q", choices=list(paper.LABELS))
        assert answer.text == "Pass" and answer.probabilities is None


def test_the_experiment_report_puts_the_weighted_rating_beside_the_labels():
    def asked(turn, label, probabilities):
        return judgments.Judgment(f"k{turn}", "paper-rating", "judge", label, label, turn_id=turn,
                                  probabilities=probabilities)
    rows = [asked(1, "Pass", {"Fail": 0.45, "Pass": 0.5, "Excellent": 0.05}),
            asked(2, "Excellent", {"Fail": 0.0, "Pass": 0.1, "Excellent": 0.9}),
            asked(3, "Fail", None)]
    notes = _weighted_notes(rows, {1: "lima-dialogue", 2: "lima-dialogue", 3: "lima-zero-shot"})
    assert len(notes) == 1  # the zero-shot model's one label came without probabilities
    assert notes[0].startswith("lima-dialogue: the judge's probability-weighted rating is 2.25")
    assert "beside 2.50 for the labels it chose, over 2 turns; 1 near ties" in notes[0] and "0 unsure" in notes[0]
