"""The workbench in a real browser: chat, stream, rate, reload, retrain, against the real app."""

import json
import time

import pytest
import yaml
from playwright.sync_api import expect

from lima.store import chatlog, connect
from lima.store import runs
from tests.helpers.browser import studio
from tests.helpers.training import tiny_preset, write_lima

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_base):
    home = tmp_path_factory.mktemp("studio-home")
    lima = write_lima(home / "lima.jsonl")
    (home / "presets").mkdir()
    (home / "presets" / "tiny.yaml").write_text(yaml.safe_dump(tiny_preset(tiny_base)))
    serve = ["--model", f"base={tiny_base}", "--model", f"other={tiny_base}", "--quantize", "none"]
    with studio(home, serve, env={"LIMA_DATASET": str(lima)}) as url:
        yield url, home


def db_of(home):
    return connect(home / "lima.db")


def wait_until(check, timeout=60, every=0.1, what=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")


def letters(text: str) -> str:
    """Only letters and digits: the chat renders Markdown, the log keeps the raw text."""
    return "".join(c for c in text if c.isalnum())


def greedy(page):
    """Temperature 0 in the Chat tab: this tiny model's greedy reply runs to the length limit."""
    page.get_by_text("Sampling (the paper's decoding by default)").click()
    number = page.locator("input[aria-label='number input for temperature']")
    slider = page.locator("input[aria-label='range slider for temperature']")

    def temperature_zero():  # typed values only stick once the page has finished wiring its inputs
        number.fill("0")
        number.press("Enter")
        page.wait_for_timeout(200)
        return slider.input_value() == "0"

    wait_until(temperature_zero, 20, 0.1, what="the temperature at 0")


def test_the_first_enter_on_a_fresh_page_sends_in_chat_and_compare(app, page):
    """A newcomer's first act: open the page, type, press Enter, with nothing waited for but the box
    itself (the page may still be filling its lists). The message is in the conversation within
    2 s and is answered; the same in the Compare tab, which starts the comparison it implies."""
    url, home = app
    page.goto(url)
    box = page.get_by_placeholder("Message (Enter sends, Shift+Enter for a new line)")
    box.click()
    page.keyboard.type("first words here")
    page.keyboard.press("Enter")
    expect(page.locator("#chatbot")).to_contain_text("first words here", timeout=2000)
    db = db_of(home)
    [conversation] = wait_until(lambda: list(db["conversations"].rows_where("title = 'first words here'")), 20)
    assert conversation["model"] == "base"  # the model the list shows first
    wait_until(lambda: db["turns"].count_where("conversation_id = ? and role = 'assistant' and status = 'complete'",
                                               [conversation["id"]]), 60, what="the reply")
    expect(page.locator("#chat-model input")).to_have_value("base")
    page.screenshot(path=str(home / "first-enter-chat.png"))

    known = {r["id"] for r in db["comparisons"].rows}
    fresh = page.context.new_page()
    fresh.goto(url)
    fresh.get_by_role("tab", name="Compare").click()
    box = fresh.get_by_placeholder("Message for both (Enter sends, Shift+Enter for a new line)")
    box.click()
    fresh.keyboard.type("both of you, hello")
    fresh.keyboard.press("Enter")
    for side in ("#compare-a", "#compare-b"):
        expect(fresh.locator(side)).to_contain_text("both of you, hello", timeout=2000)
    [row] = wait_until(lambda: [r for r in db_of(home)["comparisons"].rows if r["id"] not in known], 20)
    assert {row["left_model"], row["right_model"]} == {"base", "other"}
    fresh.screenshot(path=str(home / "first-enter-compare.png"))
    fresh.close()


def held_page_load(page, url):
    """Opens ``url`` with the Chat tab's page-load answer (the conversation this browser had open)
    held on its way, as a busy server would delay it; returns a function that lets it go and waits
    until the page has applied it."""
    import json

    import httpx

    config = httpx.get(f"{url}/config", timeout=30).json()
    [chatbot] = [c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "chatbot"]
    [restore] = [d["id"] for d in config["dependencies"]
                 if any(event == "load" for _, event in d["targets"]) and chatbot in d["outputs"]]
    held = []

    def hold(route):
        if json.loads(route.request.post_data or "{}").get("fn_index") == restore:
            held.append(route)
        else:
            route.continue_()

    page.route("**/queue/join*", hold)
    page.goto(url)
    wait_until(lambda: held or page.wait_for_timeout(50), 30, 0, what="the page-load request")

    def release():
        with page.expect_response(lambda response: response.request == held[0].request, timeout=30000):
            held[0].continue_()
        page.unroute("**/queue/join*")
        # The answer is on the page 0.1 s later on an idle machine (nothing on the page says when);
        # what is checked next is that it did not take away what the person did meanwhile.
        page.wait_for_timeout(3000)

    return release


def test_what_a_person_does_before_the_page_has_finished_opening_stays(app, page):
    """The page-load answer comes late (a busy server): a conversation reopened, or a first message
    sent, before it is back stays on screen and goes on; the late answer does not blank the chat."""
    url, home = app
    db = db_of(home)
    conversation = chatlog.new_conversation(db, "base", "tester", None, source="chat", title="eggs before load")
    chatlog.add_turn(db, conversation, "user", "eggs before load", model="base")
    release = held_page_load(page, url)
    page.locator("#reopen input").click()
    page.locator("#reopen").get_by_role("option").filter(has_text="eggs before load").first.click()
    chatbot = page.locator("#chatbot")
    expect(chatbot).to_contain_text("eggs before load", timeout=20000)
    release()
    expect(chatbot).to_contain_text("eggs before load")
    page.get_by_role("button", name="Retry reply").click()  # the question has no reply yet
    wait_until(lambda: db_of(home)["turns"].count_where(
        "conversation_id = ? and role = 'assistant' and status = 'complete'", [conversation]), 120,
        what="the reply to the reopened conversation")

    fresh = page.context.new_page()
    release = held_page_load(fresh, url)
    fresh.get_by_placeholder("Message (Enter sends, Shift+Enter for a new line)").click()
    fresh.keyboard.type("said before the page opened")
    fresh.keyboard.press("Enter")
    expect(fresh.locator("#chatbot")).to_contain_text("said before the page opened", timeout=20000)
    [started] = wait_until(lambda: list(db_of(home)["conversations"].rows_where(
        "title = 'said before the page opened'")), 30, what="the first message in the log")
    wait_until(lambda: db_of(home)["turns"].count_where(
        "conversation_id = ? and role = 'assistant' and status = 'complete'", [started["id"]]), 120,
        what="the reply to the first message")
    release()
    expect(fresh.locator("#chatbot")).to_contain_text("said before the page opened")
    expect(fresh.locator("#chat-status")).to_contain_text(started["id"])
    fresh.screenshot(path=str(home / "acted-before-load.png"))
    fresh.close()


def test_chat_stream_rate_reload(app, page):
    url, home = app
    before = db_of(home).execute("select coalesce(max(id), 0) from turns").fetchone()[0]  # this test's turns only
    page.goto(url)
    page.locator("#chat-model input").wait_for()
    wait_until(lambda: page.locator("#chat-model input").input_value() == "base", 30)
    page.locator("#rater input, #rater textarea").first.fill("tester")
    greedy(page)  # a stream to watch
    # as a person types: Shift+Enter starts a new line, Enter sends
    box = page.get_by_placeholder("Message (Enter sends, Shift+Enter for a new line)")
    box.click()
    page.keyboard.type("how do i boil an egg?")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("soft, please")
    assert box.input_value() == "how do i boil an egg?\nsoft, please"
    # Every length the reply shows is recorded in the page as it changes, and polled from here too:
    # on a busy machine the polls alone can miss the whole stream. The observer watches the body,
    # not the chat, so a chat element the page re-creates cannot leave it watching nothing.
    bots = "#chatbot .message-row.bot-row, #chatbot [data-testid='bot']"
    page.evaluate("""bots => { window.replyLengths = [];
        new MutationObserver(() => { const shown = document.querySelectorAll(bots);
            if (shown.length) window.replyLengths.push(shown[shown.length - 1].innerText.length); })
            .observe(document.body, {childList: true, subtree: true, characterData: true}); }""", bots)
    page.keyboard.press("Enter")

    bot = page.locator(bots).last
    seen = set()

    def finished():
        if bot.count():
            seen.add(len(bot.inner_text()))
        rows = list(db_of(home)["turns"].rows_where("role = 'assistant' and status = 'complete' and id > ?",
                                                    [before]))
        return rows[0] if rows else None

    turn = wait_until(finished, 60, 0.05, "the reply to complete in the log")
    [sent] = db_of(home)["turns"].rows_where("role = 'user' and id > ?", [before])
    assert sent["content"] == "how do i boil an egg?\nsoft, please" and box.input_value() == ""
    # Markdown may hide a few characters of this tiny model's random text; the rest must match.
    wait_until(lambda: len(letters(bot.inner_text())) >= 0.8 * len(letters(turn["content"])) > 0, 20,
               what="the saved reply on screen")
    recorded = page.evaluate("window.replyLengths")
    seen |= set(recorded)
    assert len([n for n in seen if n > 0]) >= 2, \
        f"the reply did not stream: lengths seen {sorted(seen)}, recorded in the page {recorded[:50]}"

    # the three labels are on screen under the reply, with the paper's definitions on hover
    page.mouse.move(0, 0)  # nothing hovered: the buttons must show anyway
    labels = {name: page.locator("#chatbot").get_by_role("button", name=name, exact=True).last
              for name in ("Fail", "Pass", "Excellent")}
    for name, button in labels.items():
        assert button.is_visible(), f"{name} is not visible under the reply"
    assert "did not meet the requirements" in labels["Fail"].get_attribute("title")
    # A change of mind before the first click's answer is back (a busy server): the Pass click's
    # requests are held on their way (the chatbot sends each click twice), Excellent is clicked,
    # then all go. The second click must be sent, not dropped because an event is still pending,
    # and both ratings are kept in the log, in order.
    held = []

    def hold(route):  # only the rating clicks (the page's timers use the same queue)
        if '"liked"' in (route.request.post_data or ""):
            held.append(route)
        else:
            route.continue_()

    def held_for(label):
        page.wait_for_timeout(50)  # lets the page and the route handler run
        return [r for r in held if f'"liked":"{label}"' in r.request.post_data]

    page.route("**/queue/join*", hold)
    labels["Pass"].click()
    passed = wait_until(lambda: held_for("Pass"), 20, 0, what="the Pass click's request")
    labels["Excellent"].click()  # while Pass is still on its way
    excellent = wait_until(lambda: held_for("Excellent"), 10, 0, what="the Excellent click's request")
    for route in passed:
        route.continue_()
    wait_until(lambda: chatlog.current_rating(db_of(home), turn["id"]) == "Pass", 20, what="the Pass rating")
    for route in excellent:
        route.continue_()
    page.unroute("**/queue/join*")
    wait_until(lambda: chatlog.current_rating(db_of(home), turn["id"]) == "Excellent", 20, what="the change")
    history = chatlog.rating_history(db_of(home), turn["id"])
    assert [r["label"] for r in history] == ["Pass", "Excellent"] and {r["rater"] for r in history} == {"tester"}
    page.locator("#chatbot").screenshot(path=str(home / "rated.png"))

    # The same for rewrites (the pencil): a second rewrite made while the first is on its way. Both
    # requests are held in the page (the second names the first as the text it replaces), the first
    # goes and is logged, then the second: it must have been sent, and be kept after the first.
    def rewrite(text):
        page.locator("#chatbot .bot-row, #chatbot [data-testid='bot']").last.hover()
        page.locator("#chatbot").get_by_role("button", name="Edit").last.click()
        page.locator("#chatbot textarea").last.fill(text)
        page.locator("#chatbot").get_by_role("button", name="Submit").last.click()

    def edit_of(route):
        return (json.loads(route.request.post_data or "{}").get("event_data") or {}).get("value")

    def hold_rewrites(route):  # only the rewrites (the page's timers use the same queue)
        if "previous_value" in ((json.loads(route.request.post_data or "{}").get("event_data")) or {}):
            held.append(route)
        else:
            route.continue_()

    def held_with(text):
        page.wait_for_timeout(50)  # lets the page and the route handler run
        return [r for r in held if edit_of(r) == text]

    peel, boil = "Peel it after a minute in cold water.", "Boil it for six minutes, then cool it."
    texts = lambda: [w["content"] for w in db_of(home)["rewrites"].rows_where("turn_id = ?", [turn["id"]],  # noqa: E731
                                                                             order_by="id")]
    held.clear()
    page.route("**/queue/join*", hold_rewrites)
    rewrite(peel)
    first = wait_until(lambda: held_with(peel), 20, 0, what="the first rewrite's request")
    rewrite(boil)  # while the first is still on its way
    second = wait_until(lambda: held_with(boil), 10, 0, what="the second rewrite's request")
    for route in first:
        route.continue_()
    wait_until(lambda: texts() == [peel], 20, what="the first rewrite in the log")
    for route in second:
        route.continue_()
    page.unroute("**/queue/join*")
    wait_until(lambda: len(texts()) >= 2, 20, what="both rewrites in the log")
    assert texts() == [peel, boil]

    page.reload()
    page.locator("#chatbot").get_by_text("how do i boil an egg?").wait_for(timeout=20000)
    chosen = page.locator("#chatbot").get_by_role("button", name="Excellent", exact=True).last
    other = page.locator("#chatbot").get_by_role("button", name="Pass", exact=True).last

    def shown_as_chosen():  # filled in its colour, as the person sees it; the others stay plain
        return (chosen.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(22, 163, 74)"
                and other.evaluate("b => getComputedStyle(b).backgroundColor") != "rgb(37, 99, 235)")

    wait_until(shown_as_chosen, 20, what="Excellent shown as chosen after the reload")
    assert "conversation" in page.locator("#chat-status").inner_text()


def test_empty_message_shows_a_warning_and_saves_nothing(app, page):
    url, home = app
    before = db_of(home)["turns"].count
    page.goto(url)
    wait_until(lambda: page.locator("#chat-model input").input_value() == "base", 30)
    page.locator("#new-conversation").click()
    page.locator("#send").click()
    page.get_by_test_id("toast-text").get_by_text("Type a message first.").wait_for(timeout=10000)
    expect(page.locator("#chat-status")).to_contain_text("not sent: Type a message first.")  # and it stays said
    assert db_of(home)["turns"].count == before


def test_retrain_button_runs_to_done_and_the_model_appears(app, page):
    url, home = app
    page.goto(url)
    page.get_by_role("tab", name="Retrain").click()
    page.locator("#preset input").click()
    page.get_by_role("option", name="tiny (yours)").click()
    wait_until(lambda: "6 LIMA single-turn examples + 30 project dialogue chains"
               in page.locator("#train-plan").inner_text(), 30)
    page.locator("#retrain").click()
    page.locator("#train-message").get_by_text("lima train --variant dialogue").wait_for(timeout=20000)
    page.locator("#retrain").click()  # a second click while the first run goes is refused
    page.get_by_text("A retrain is already running").wait_for(timeout=20000)
    progress = page.locator("#train-progress")
    steps_seen = set()

    def done():
        status = progress.get_attribute("data-status")
        steps_seen.add(int(progress.get_attribute("data-step") or 0))
        return status if status in ("done", "failed", "cancelled") else None

    assert wait_until(done, 240, 0.2) == "done", progress.inner_text()
    assert max(steps_seen) > 0 and len(steps_seen) >= 2  # the bar moved before it finished
    [run] = runs.history(db_of(home))
    assert run.status == "done" and run.variant == "dialogue"
    assert page.locator("#loss-chart").get_by_text("loss").count() > 0
    # the run's model beside the base it came from: the figures, a chart, and the history's columns
    table = page.locator("#behaviour-table")
    table.get_by_text("base (parent)").wait_for(timeout=20000)
    assert "lima-dialogue (new)" in table.inner_text() and "ended by themselves" in table.inner_text()
    page.locator("#behaviour-chart img").wait_for(timeout=20000)
    assert "→" in page.locator("#run-history").inner_text()  # ends by itself: parent -> new
    page.screenshot(path=str(home / "retrain.png"), full_page=True)
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-model input").click()  # the list refreshes from the service when opened
    page.get_by_role("option", name="lima-dialogue").wait_for(timeout=20000)


def test_compare_two_models_rate_both_sides_and_give_a_verdict(app, page):
    url, home = app
    page.goto(url)
    page.get_by_role("tab", name="Compare").click()
    wait_until(lambda: page.locator("#compare-left input").input_value(), 30)
    for box, name in (("#compare-left", "other"), ("#compare-right", "base")):  # not the default pair
        page.locator(f"{box} input").click()
        page.locator(box).get_by_role("option", name=name, exact=True).click()
        wait_until(lambda: page.locator(f"{box} input").input_value() == name, 10)
    page.get_by_role("tab", name="Chat").click()  # a look elsewhere: the lists refresh, the picks stay
    page.get_by_role("tab", name="Compare").click()
    page.locator("#compare-opener input").click()
    page.get_by_role("option", name="opener-02 · explanation").click()
    page.locator("#compare-start").click()
    box = page.get_by_placeholder("Message for both (Enter sends, Shift+Enter for a new line)")
    wait_until(lambda: box.input_value() == "Why is the sky blue?", 20)
    box.click()
    page.keyboard.press("End")
    page.keyboard.press("Enter")
    db = db_of(home)
    [row] = wait_until(lambda: list(db["comparisons"].rows_where("opener_id = 'opener-02'")), 20)
    assert (row["left_model"], row["right_model"], row["opener_id"]) == ("other", "base", "opener-02")
    assert [page.locator(f"{box} input").input_value() for box in ("#compare-left", "#compare-right")] == [
        "other", "base"]

    def answered(conversation):
        return db["turns"].count_where("conversation_id = ? and role = 'assistant' and status = 'complete'",
                                       [conversation])

    wait_until(lambda: answered(row["left_conversation"]) and answered(row["right_conversation"]), 60)
    page.mouse.move(0, 0)
    for side, label in (("#compare-a", "Pass"), ("#compare-b", "Excellent")):
        page.locator(side).get_by_role("button", name=label, exact=True).last.click()
    left_turn = next(db["turns"].rows_where("conversation_id = ? and role = 'assistant'", [row["left_conversation"]]))
    right_turn = next(db["turns"].rows_where("conversation_id = ? and role = 'assistant'", [row["right_conversation"]]))
    wait_until(lambda: chatlog.current_rating(db_of(home), left_turn["id"]) == "Pass", 20)
    wait_until(lambda: chatlog.current_rating(db_of(home), right_turn["id"]) == "Excellent", 20)
    page.locator("#compare-verdict").get_by_text("second better").click()
    page.locator("#compare-save").click()
    wait_until(lambda: db_of(home)["comparisons"].get(row["id"])["verdict"] == "right", 20)
    page.locator("#compare-status").get_by_text("verdict saved").wait_for(timeout=10000)
    # two named raters on the same turns (as two people rating in the Chat tab would leave them)
    for turn, labels in ((left_turn, ("Pass", "Pass")), (right_turn, ("Excellent", "Pass"))):
        for rater, label in zip(("ana", "bo"), labels):
            chatlog.rate(db_of(home), turn["id"], label, rater)
    page.get_by_role("tab", name="Report").click()
    page.locator("#report-text").get_by_text("base better in 1 of 1").wait_for(timeout=30000)
    # the leaderboard (few verdicts, said so) and the raters' agreement, each with its chart
    report = page.locator("#report-text")
    report.get_by_text("only 1 verdict: the intervals are wide").wait_for(timeout=30000)
    report.get_by_text("Krippendorff's alpha (ordinal, 2 raters, 2 shared turns)").wait_for(timeout=30000)
    for chart in ("#report-leaderboard img", "#report-agreement img"):
        expect(page.locator(chart)).to_be_visible(timeout=30000)
        assert page.locator(chart).evaluate("img => img.naturalWidth") > 100, chart
    page.screenshot(path=str(home / "report-tab.png"), full_page=True)


def test_a_password_protected_workbench_works_for_whoever_logs_in(tmp_path, tiny_base, page):
    """The service behind a password needs a key; the page, which holds it, chats as before, and the
    login name is the rater."""
    home = tmp_path / "studio"
    home.mkdir()
    serve = ["--no-registry", "--model", f"base={tiny_base}", "--quantize", "none"]
    with studio(home, serve, up_args=("--password", "secret")) as url:
        page.goto(url)
        page.get_by_label("username").fill("ada")
        page.get_by_label("password").fill("secret")
        page.keyboard.press("Enter")
        wait_until(lambda: page.locator("#chat-model input").count()
                   and page.locator("#chat-model input").input_value() == "base", 60, what="the models after login")
        page.get_by_placeholder("Message (Enter sends, Shift+Enter for a new line)").click()
        page.keyboard.type("hello")
        page.keyboard.press("Enter")
        turn = wait_until(lambda: next(db_of(home)["turns"].rows_where(
            "role = 'assistant' and status = 'complete'"), None), 60, what="the reply")
        page.mouse.move(0, 0)
        page.locator("#chatbot").get_by_role("button", name="Fail", exact=True).last.click()
        wait_until(lambda: chatlog.current_rating(db_of(home), turn["id"]) == "Fail", 20, what="the rating")
        assert chatlog.rating_history(db_of(home), turn["id"])[0]["rater"] == "ada"


def test_a_retrain_behind_a_password_answers_in_chat_without_a_restart(tmp_path, tiny_base, page):
    """`lima up --password`: the service needs the session's key, and the training run started from
    the Retrain tab hands its new model over with that key, so it answers in the Chat tab at once."""
    home = tmp_path / "studio"
    (home / "presets").mkdir(parents=True)
    (home / "presets" / "tiny.yaml").write_text(yaml.safe_dump(tiny_preset(tiny_base)))
    lima = write_lima(tmp_path / "lima.jsonl")
    serve = ["--no-registry", "--model", f"base={tiny_base}", "--quantize", "none"]
    with studio(home, serve, env={"LIMA_DATASET": str(lima)}, up_args=("--password", "secret")) as url:
        page.goto(url)
        page.get_by_label("username").fill("ada")
        page.get_by_label("password").fill("secret")
        page.keyboard.press("Enter")
        page.get_by_role("tab", name="Retrain").click()
        page.locator("#preset input").click()
        page.get_by_role("option", name="tiny (yours)").click()
        wait_until(lambda: "6 LIMA single-turn examples" in page.locator("#train-plan").inner_text(), 30)
        page.locator("#retrain").click()
        progress = page.locator("#train-progress")
        assert wait_until(lambda: progress.get_attribute("data-status") in ("done", "failed", "cancelled")
                          and progress.get_attribute("data-status"), 300, 0.5) == "done", progress.inner_text()
        [run] = runs.history(db_of(home))
        assert "refused" not in (run.error or "") and run.model_name == "lima-dialogue"
        page.get_by_role("tab", name="Chat").click()
        page.locator("#chat-model input").click()  # the list refreshes from the service when opened
        page.get_by_role("option", name="lima-dialogue").click()
        wait_until(lambda: page.locator("#chat-model input").input_value().startswith("lima-dialogue"), 20)
        page.get_by_placeholder("Message (Enter sends, Shift+Enter for a new line)").click()
        page.keyboard.type("how do i boil an egg?")
        page.keyboard.press("Enter")
        reply = wait_until(lambda: next(db_of(home)["turns"].rows_where(
            "role = 'assistant' and status = 'complete' and model = 'lima-dialogue'"), None), 60,
            what="a reply from the retrained model")
        assert reply["completion_tokens"] >= 1
        page.screenshot(path=str(home / "password-retrain-chat.png"), full_page=True)


def test_a_reply_cut_short_by_a_killed_workbench_is_kept_marked_and_retried(tmp_path, tiny_base, page):
    """`lima up` killed outright (SIGKILL) while a reply streams in the browser: after a restart the
    conversation, reopened, shows what was saved of the reply, marked as cut short, and Retry
    reply answers the question anew in its place."""
    import os
    import signal

    import psutil

    home = tmp_path / "studio"
    home.mkdir()
    serve = ["--no-registry", "--model", f"base={tiny_base}", "--quantize", "none"]
    question = "tell me everything about eggs"
    with studio(home, serve) as url:
        page.goto(url)
        wait_until(lambda: page.locator("#chat-model input").input_value() == "base", 60)
        greedy(page)
        page.get_by_placeholder("Message (Enter sends, Shift+Enter for a new line)").click()
        page.keyboard.type(question)
        page.keyboard.press("Enter")
        streaming = wait_until(lambda: next(db_of(home)["turns"].rows_where(
            "role = 'assistant' and status = 'streaming' and length(content) > 20"), None), 60, 0.05,
            what="a reply streaming and saved")
        port = url.rsplit(":", 1)[1]
        [up] = [p for p in psutil.process_iter(["cmdline"])
                if "up" in (p.info["cmdline"] or []) and port in (p.info["cmdline"] or [])]
        family = up.children(recursive=True)
        os.kill(up.pid, signal.SIGKILL)
        assert psutil.wait_procs([up, *family], timeout=60)[1] == []  # the service stops itself too
    saved = db_of(home)["turns"].get(streaming["id"])
    assert saved["status"] == "streaming" and len(saved["content"]) >= len(streaming["content"])

    with studio(home, serve) as url:
        assert "were cut short by an earlier stop" in (home / "up.log").read_text()
        page.goto(url)
        page.locator("#reopen input").click()
        page.locator("#reopen").get_by_role("option").filter(has_text=question).first.click()
        chatbot = page.locator("#chatbot")
        expect(chatbot).to_contain_text(question, timeout=20000)
        expect(chatbot).to_contain_text("cut short: the reply was interrupted", timeout=20000)
        assert db_of(home)["turns"].get(streaming["id"])["status"] == "interrupted"
        page.screenshot(path=str(home / "cut-short.png"))
        page.get_by_role("button", name="Retry reply").click()
        conversation = saved["conversation_id"]
        wait_until(lambda: db_of(home)["turns"].count_where(
            "conversation_id = ? and role = 'assistant' and status = 'complete'", [conversation]), 120,
            what="the new reply")
        expect(chatbot).not_to_contain_text("cut short: the reply was interrupted", timeout=20000)
        statuses = [t["status"] for t in db_of(home)["turns"].rows_where(
            "conversation_id = ?", [conversation], order_by="id")]
        assert statuses == ["complete", "replaced", "complete"]  # the cut-short text kept in the log
        page.screenshot(path=str(home / "retried.png"))
