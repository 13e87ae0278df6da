"""`lima experiment` end to end on tiny models, judged by a scripted judge over the real OpenAI
protocol: the table it writes is exactly what the judge said, garbage is counted as unparsed,
and a killed experiment resumes without asking an answered question again."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from lima.paper import DIALOGUE, ZERO_SHOT
from lima.store import connect
from lima.store.registry import register
from tests.helpers.browser import studio
from tests.helpers.fake_judge import fake_judge
from tests.helpers.tiny_model import build_model, build_tokenizer
from lima.children import lima_command

OPENERS = 10


class Script:
    """What the scripted judge answers (``answer(question, home)``), and what it has seen: an
    answered question asked again is recorded; at ``kill_at`` answers it SIGKILLs ``victim`` mid-question."""

    def __init__(self, home: Path):
        self.home, self.answer = home, lambda question, home: "Neither"
        self.answered: set[str] = set()
        self.asked_again: list[str] = []
        self.kill_at: int | None = None
        self.victim: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def __call__(self, system: str, question: str) -> str | None:
        with self.lock:
            if question in self.answered:
                self.asked_again.append(question)
            if self.kill_at is not None and len(self.answered) == self.kill_at:
                self.kill_at = None
                os.kill(self.victim.pid, signal.SIGKILL)  # it never gets this answer
                return None
            self.answered.add(question)
            return self.answer(question, self.home)


@pytest.fixture
def judge(lima_home):
    script = Script(lima_home)
    with fake_judge(script, stall_seconds=0.5) as (url, _):
        yield url, script


@pytest.fixture(scope="module")
def variants(tmp_path_factory, tiny_base):
    """Two different tiny models, so each reply's text tells which model wrote it."""
    folder = tmp_path_factory.mktemp("other-variant")
    tokenizer = build_tokenizer()
    build_model(tokenizer, seed=1).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {ZERO_SHOT: tiny_base, DIALOGUE: folder}


def model_of(text: str, home: Path) -> str:
    """Which model wrote this reply: looked up in the log, as only the test may."""
    rows = list(connect(home / "lima.db").query(
        "select distinct model from turns where role = 'assistant' and content = ?", [text]))
    assert len(rows) == 1, f"reply text not unique to one model: {text!r} -> {rows}"
    return rows[0]["model"]


def partial_judge(question: str, home: Path) -> str:
    """Excellent for every dialogue reply, Fail for every zero-shot one; the dialogue side wins."""
    found = re.search(r"\[Reply to rate\]\n(.*?)\n\nOn the first line", question, re.S)
    if found:
        return "Excellent: good." if model_of(found.group(1), home) == DIALOGUE else "Fail\nbad."
    conversation_a = re.search(r"\[Conversation A\]\n(.*?)\n\n\[Conversation B\]", question, re.S).group(1)
    first_reply = re.search(r"^Assistant: (.*)$", conversation_a, re.M).group(1)
    rows = list(connect(home / "lima.db").query(
        "select distinct model from turns where role = 'assistant' and content like ?", [first_reply + "%"]))
    return "A" if rows[0]["model"] == DIALOGUE else "B"


def experiment(judge_url: str, out: Path, **popen):
    cmd = [*lima_command(), "experiment", "--reuse", "--judge-url", judge_url,
           "--judge-model", "scripted", "--max-tokens", "6", "--out", str(out), "--", "--quantize", "none"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


@pytest.fixture
def registered_variants(variants):
    db = connect()
    for name, folder in variants.items():
        register(db, name, str(folder), kind="trained")
    return variants


@pytest.mark.browser
def test_the_table_is_exactly_what_the_judge_said(judge, registered_variants, tmp_path, lima_home, tiny_base, page):
    url, script = judge
    script.answer = partial_judge
    process = experiment(url, tmp_path / "out")
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    db = connect()
    [row] = db["experiments"].rows_where()
    assert row["status"] == "done" and row["judge_model"] == "scripted"
    turns = {model: db.execute("select count(*) from turns t join conversations c on c.id = t.conversation_id "
                               "where c.source = 'experiment' and t.role = 'assistant' and t.model = ?",
                               [model]).fetchone()[0] for model in (ZERO_SHOT, DIALOGUE)}
    assert turns[ZERO_SHOT] >= OPENERS and turns[DIALOGUE] >= OPENERS
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"| Fail turns | {turns[ZERO_SHOT]} of {turns[ZERO_SHOT]} | 15 of 42 | 0 of {turns[DIALOGUE]} | 1 of 46 |" \
        in report
    assert "| Excellent (95% CI) | 0.0% " in report and f"| conversations | {OPENERS} | 10 | {OPENERS} | 10 |" in report
    assert f"{DIALOGUE} better in {OPENERS} of {OPENERS}, {ZERO_SHOT} better in 0, tied in 0" in report
    assert "0 judge answers unparsed" in report and (tmp_path / "out" / "ratings.png").stat().st_size > 0
    # the judge's ratings are ratings by `judge:scripted`, each with its raw answer; no person's
    ratings = list(db.query("select r.rater, r.label, j.raw from ratings r join judgments j on j.key = r.judgment"))
    assert len(ratings) == sum(turns.values()) and {r["rater"] for r in ratings} == {"judge:scripted"}
    assert {r["raw"] for r in ratings if r["label"] == "Fail"} == {"Fail\nbad."}
    assert db.execute("select count(*) from current_ratings").fetchone()[0] == 0
    assert script.asked_again == []
    assert "Section 6, rated by the judge `judge:scripted`" in output
    # the Report tab's Experiment view shows the same table, its stages done, and the chart
    from ui.report_tab import render_experiment

    text, chart, _ = render_experiment()
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert table and all(line in text for line in table)
    assert "✓ report" in text and chart is not None and min(chart.size) > 100  # the chart, as an image
    # and a person opening the Report tab sees the same numbers
    with studio(lima_home, ["--no-registry", "--model", f"base={tiny_base}", "--quantize", "none"]) as ui:
        page.goto(ui)
        page.get_by_role("tab", name="Report").click()
        view = page.locator("#experiment-text")
        view.get_by_text("Section 6, rated by the judge").wait_for(timeout=30000)
        cells = view.locator("table").first.inner_text()
        assert f"{turns[ZERO_SHOT]} of {turns[ZERO_SHOT]}" in cells and f"0 of {turns[DIALOGUE]}" in cells
        assert f"{DIALOGUE} better in {OPENERS} of {OPENERS}" in view.inner_text()
        page.locator("#experiment-chart img").wait_for(timeout=10000)


def test_garbage_from_the_judge_is_counted_as_unparsed(judge, registered_variants, tmp_path, lima_home):
    url, script = judge
    script.answer = lambda question, home: "I would rather not say."
    process = experiment(url, tmp_path / "out")
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    db = connect()
    asked = db["judgments"].count_where("protocol = 'paper-rating'")
    assert asked >= 2 * OPENERS and db["ratings"].count == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"{asked} judge answers unparsed (not counted)" in report
    assert "No turn rated by the judge yet." in report
    # with a judge of its own, the experiment's service loads the two variants and not `base`
    served = (lima_home / "logs" / "experiment-serve.log").read_text()
    assert "loading lima-zero-shot, lima-dialogue\n" in served, served[:500]


def test_a_killed_experiment_resumes_without_asking_an_answered_question_again(judge, registered_variants, tmp_path):
    url, script = judge
    script.answer, script.kill_at = partial_judge, 7
    first = experiment(url, tmp_path / "out")
    script.victim = first
    output, _ = first.communicate(timeout=600)
    assert first.returncode == -signal.SIGKILL, output[-3000:]
    db = connect()
    held = db["experiment_conversations"].count
    assert held == 2 * OPENERS and db["ratings"].count == 7

    second = experiment(url, tmp_path / "out")
    output, _ = second.communicate(timeout=600)
    assert second.returncode == 0, output[-3000:]
    assert "resuming experiment" in output
    assert script.asked_again == []  # every answered question was reused from the log
    assert db["experiment_conversations"].count == held  # and no conversation was held twice
    assert db["experiments"].count == 1 and next(db["experiments"].rows_where())["status"] == "done"
    assert f"{DIALOGUE} better in {OPENERS} of {OPENERS}" in (tmp_path / "out" / "report.md").read_text()
