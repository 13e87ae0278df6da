"""Learning from the ratings in a real browser, as a person does it: chat, rate replies Fail, rewrite
one, see what KTO and DPO would learn, press the KTO button, chat with the new model, open before
and after in the Compare tab, rate, give a verdict, and find the model in the Report tab."""

import pytest
import yaml

from lima.store import connect
from lima.store.registry import register
from lima.store import runs
from tests.helpers.browser import studio
from tests.helpers.tiny_model import save_tiny_base, save_tiny_variant
from tests.helpers.training import tiny_preset
from tests.test_ui_browser import wait_until

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_base):
    """`lima up` serving a registered `lima-dialogue` (a tiny model set up as a trained variant). Its
    context is long: a random model's reply may run to the context's end, and a follow-up must fit."""
    home = tmp_path_factory.mktemp("studio-home")
    long_base = save_tiny_base(tmp_path_factory.mktemp("long-base"), context=8192)
    variant = save_tiny_variant(long_base, home / "models" / "lima-dialogue")
    register(connect(home / "lima.db"), "lima-dialogue", str(variant), kind="trained")
    (home / "presets").mkdir()
    preset = tiny_preset(tiny_base)
    preset["kto"] = {"bf16": False}
    preset["dpo"] = {"bf16": False}
    (home / "presets" / "tiny.yaml").write_text(yaml.safe_dump(preset))
    with studio(home, ["--model", f"base={tiny_base}", "--quantize", "none"]) as url:
        yield url, home


def send(page, text):
    box = page.get_by_placeholder("Message (Enter sends, Shift+Enter for a new line)")
    box.click()
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def replies(db, model):
    return list(db.query("select t.* from turns t where role = 'assistant' and status = 'complete' and model = ? "
                         "order by id", [model]))


def test_rate_fail_rewrite_one_press_kto_then_chat_compare_and_report(app, page):
    url, home = app
    db = connect(home / "lima.db")
    page.goto(url)
    wait_until(lambda: page.locator("#chat-model input").input_value(), 60, what="the model list")
    page.locator("#chat-model input").click()
    page.get_by_role("option", name="lima-dialogue", exact=True).click()
    wait_until(lambda: page.locator("#chat-model input").input_value() == "lima-dialogue", 20)
    page.locator("#rater input, #rater textarea").first.fill("rita")
    send(page, "how do i boil an egg?")
    wait_until(lambda: len(replies(db, "lima-dialogue")) == 1, 90, what="the first reply")
    page.mouse.move(0, 0)
    page.locator("#chatbot").get_by_role("button", name="Fail", exact=True).last.click()
    send(page, "and then?")
    wait_until(lambda: len(replies(db, "lima-dialogue")) == 2, 90, what="the second reply")
    page.mouse.move(0, 0)
    page.locator("#chatbot").get_by_role("button", name="Fail", exact=True).last.click()
    first, second = replies(db, "lima-dialogue")
    wait_until(lambda: db.execute("select count(*) from current_ratings where label = 'Fail'").fetchone()[0] == 2,
               20, what="both Fail ratings")
    # rewrite the second reply: the pencil under it, the better text, then save
    page.locator("#chatbot .bot-row, #chatbot [data-testid='bot']").last.hover()
    page.locator("#chatbot").get_by_role("button", name="Edit").last.click()
    editor = page.locator("#chatbot textarea").last
    editor.fill("Cool it in cold water for a minute, then peel it.")
    page.locator("#chatbot").get_by_role("button", name="Submit").last.click()
    wait_until(lambda: db["rewrites"].count == 1, 20, what="the rewrite saved")
    [rewrite] = db["rewrites"].rows
    assert rewrite["turn_id"] == second["id"] and rewrite["rater"] == "rita"

    # Retrain tab: KTO from the ratings (both Fails, the rewrite desirable), counts and a sample first
    page.get_by_role("tab", name="Retrain").click()
    page.locator("#preset input").click()
    page.get_by_role("option", name="tiny (yours)").click()
    page.locator("#train-stage").get_by_text("DPO: learn from the rewrites").click()
    plan = page.locator("#train-plan")
    wait_until(lambda: "1 DPO pair (rewrite" in plan.inner_text() and "by rater: rita 1" in plan.inner_text(), 30,
               what="the DPO counts in the plan")
    assert "Cool it in cold water" in plan.inner_text()  # the sample pair: the rewrite chosen
    page.locator("#train-stage").get_by_text("KTO: learn from the ratings").click()
    wait_until(lambda: "3 KTO rows" in plan.inner_text(), 30, what="the KTO counts in the plan")
    assert "by label: Fail 2, rewrite 1" in plan.inner_text() and "by rater: rita 3" in plan.inner_text()
    assert "desirable weight 2" in plan.inner_text()  # one desirable row against two Fails, balanced
    page.get_by_role("button", name="Learn from the ratings (KTO)").click()
    page.locator("#train-message").get_by_text("--stage kto").wait_for(timeout=20000)
    progress = page.locator("#train-progress")

    def done():
        status = progress.get_attribute("data-status")
        return status if status in ("done", "failed", "cancelled") else None

    assert wait_until(done, 240, 0.2, what="the KTO run to end") == "done", progress.inner_text()
    [run] = runs.history(db)
    record = runs.get(db, run.id)
    fails = [r["id"] for r in db["current_ratings"].rows_where("label = 'Fail'", order_by="id")]
    assert record.stage == "kto" and record.rating_ids["ratings"] == fails
    assert record.rating_ids["rewrites"] == [rewrite["id"]] and record.model_name == "lima-dialogue-kto"
    page.locator("#margin-chart").get_by_text("Reward margin").wait_for(timeout=20000)
    page.wait_for_timeout(2500)  # the next poll redraws both charts at their final size
    page.screenshot(path=str(home / "kto-retrain.png"), full_page=True)

    # chat with the model that learnt from exactly that rewrite
    page.get_by_role("tab", name="Chat").click()
    page.locator("#new-conversation").click()
    page.locator("#chat-model input").click()
    page.get_by_role("option", name="lima-dialogue-kto").click()
    wait_until(lambda: page.locator("#chat-model input").input_value() == "lima-dialogue-kto", 20)
    send(page, "how do i boil an egg?")
    wait_until(lambda: len(replies(db, "lima-dialogue-kto")) == 1, 90, what="a reply from the new model")

    # Compare: before and after on the conversation whose replies were rated Fail, both streaming
    page.get_by_role("tab", name="Compare").click()
    note = page.locator("#proof-note")
    note.get_by_text("lima-dialogue-kto").wait_for(timeout=20000)
    assert "1 conversation has a reply rated Fail" in note.inner_text()
    page.get_by_role("button", name="Open before and after").click()
    comparison = wait_until(lambda: list(db["comparisons"].rows_where("kind = 'before-after'")), 60,
                            what="the before-and-after comparison")[0]
    assert (comparison["left_model"], comparison["right_model"]) == ("lima-dialogue", "lima-dialogue-kto")
    status = page.locator("#compare-status")
    status.get_by_text("rate both sides and give a verdict").wait_for(timeout=240000)
    assert (page.locator("#compare-left input").input_value(),
            page.locator("#compare-right input").input_value()) == ("lima-dialogue", "lima-dialogue-kto")
    for side, chatbot in (("left", "#compare-a"), ("right", "#compare-b")):
        said = replies(db, comparison[f"{side}_model"])
        said = [t for t in said if t["conversation_id"] == comparison[f"{side}_conversation"]]
        # both user turns replayed, unless a reply filled the tiny model's context (the page says so)
        assert len(said) == 2 or (len(said) == 1 and "context" in status.inner_text()), status.inner_text()
        assert page.locator(chatbot).get_by_text("how do i boil an egg?").count() >= 1
    page.locator("#compare-b").get_by_role("button", name="Excellent", exact=True).first.click()
    wait_until(lambda: db.execute("select count(*) from current_ratings r join turns t on t.id = r.turn_id "
                                  "where t.conversation_id = ?", [comparison["right_conversation"]]).fetchone()[0],
               20, what="the after side's rating")
    page.locator("#compare-verdict").get_by_text("second better").click()
    page.locator("#compare-save").click()
    wait_until(lambda: db["comparisons"].get(comparison["id"])["verdict"] == "right", 20, what="the verdict")
    page.screenshot(path=str(home / "before-after.png"), full_page=True)

    # the Report tab lists the new model like any other, with the before-and-after verdict
    page.get_by_role("tab", name="Report").click()
    report = page.locator("#report-text")
    wait_until(lambda: "lima-dialogue-kto" in report.inner_text(), 30, what="the new model in the report")
    assert "lima-dialogue-kto better in 1 of 1" in report.inner_text()
    page.screenshot(path=str(home / "report.png"), full_page=True)
