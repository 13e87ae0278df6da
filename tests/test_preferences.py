"""KTO and DPO sets from the chat log: the mapping, the counts, the filters, every bad input, and the
token ids the trainers see against what the service renders."""

import asyncio
import time

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from dialogues import preferences
from dialogues.preferences import Filters, PreferenceError
from lima import chat_format
from studio.cli import build_parser
from lima.store import chatlog, connect
from lima.store.db import snapshot
from service.engines.transformers_engine import TransformersEngine
from service.sampling import SamplingParams
from training import preference, recipe as recipes
from training.request import TrainRequest
from tests.helpers.ratings import conversation, rated_log
from tests.helpers.training import TINY


def snapshot_of(db):
    return {table: list(db[table].rows) for table in ("conversations", "turns", "ratings", "rewrites")}


def test_kto_rows_follow_the_current_ratings_and_the_rewrites():
    db = connect()
    ids = rated_log(db)
    data = preferences.build(db, "kto")
    # 5 rated replies (the judge's rating of b[0] does not count; Bob's Pass does) + 1 rewrite
    assert [(r["completion"][0]["content"], r["label"]) for r in data.rows] == [
        ("put it in boiling water for nine minutes.", True),
        ("the fox the fox the fox", False),  # Alice's latest rating: Fail
        ("peel it under running water.", True),  # her rewrite, desirable, for the same prompt
        ("cool it in cold water, then peel it.", True),
        ("a list holds items in order.", True),
        ("i do not know.", False)]
    # the prompt is the conversation before the reply, as it was said
    assert data.rows[1]["prompt"] == [{"role": "user", "content": "how do i boil an egg?"},
                                      {"role": "assistant", "content": "put it in boiling water for nine minutes."},
                                      {"role": "user", "content": "and then?"}]
    assert data.rows[2]["prompt"] == data.rows[1]["prompt"]
    assert data.counts == {"label": {"Excellent": 1, "Fail": 2, "Pass": 2, "rewrite": 1},
                           "model": {"lima-dialogue": 3, "lima-zero-shot": 2},
                           "rater": {"alice": 3, "bob": 3}}
    current = {row["turn_id"]: row["id"] for row in db["current_ratings"].rows}
    assert data.rating_ids == [current[i] for i in (*ids["a"], *ids["b"])]
    assert data.conversations == [db["turns"].get(ids["a"][1])["conversation_id"],
                                  db["turns"].get(ids["b"][1])["conversation_id"]]
    assert "**6** KTO rows" in data.summary() and "Fail 2" in data.summary() and "alice 3" in data.summary()
    assert data.sample().startswith("Sample row: user: how do i boil an egg?")


def test_the_prompt_is_what_the_model_was_sent_a_rewrite_only_from_when_it_was_made():
    db = connect()
    ids = rated_log(db)  # Alice rewrote a[1] after a[2] was said: a[2] answered the original
    cid = db["turns"].get(ids["a"][0])["conversation_id"]
    later = preferences.build(db, "kto").rows[3]
    assert later["completion"][0]["content"] == "cool it in cold water, then peel it."
    assert later["prompt"][3] == {"role": "assistant", "content": "the fox the fox the fox"}
    # a rewrite made before the next message is what the chat sends from then on
    time.sleep(0.01)  # a person types for longer than a millisecond
    chatlog.add_turn(db, cid, "user", "and after peeling?")
    last = chatlog.add_turn(db, cid, "assistant", "eat it.", model="lima-dialogue")
    chatlog.rate(db, last, "Pass", "alice")
    row = preferences.build(db, "kto").rows[4]
    assert row["completion"][0]["content"] == "eat it."
    assert row["prompt"][3] == {"role": "assistant", "content": "peel it under running water."}
    assert [m["role"] for m in row["prompt"]] == ["user", "assistant"] * 3 + ["user"]


def test_dpo_pairs_are_the_rewrites_over_the_originals():
    db = connect()
    rated_log(db)
    data = preferences.build(db, "dpo")
    [row] = data.rows
    assert row["chosen"] == [{"role": "assistant", "content": "peel it under running water."}]
    assert row["rejected"] == [{"role": "assistant", "content": "the fox the fox the fox"}]
    assert row["prompt"][-1] == {"role": "user", "content": "and then?"}
    assert data.counts == {"label": {"rewrite": 1}, "model": {"lima-dialogue": 1}, "rater": {"alice": 1}}
    assert len(data.rewrite_ids) == 1 and "chosen" in data.sample()


def test_pass_weight_repeats_the_stronger_rows_and_zero_leaves_pass_out():
    db = connect()
    rated_log(db)
    half = preferences.build(db, "kto", pass_weight=0.5)
    texts = [r["completion"][0]["content"] for r in half.rows]
    assert texts.count("put it in boiling water for nine minutes.") == 2  # Excellent counts twice a Pass
    assert texts.count("peel it under running water.") == 2  # a rewrite as an Excellent
    assert texts.count("a list holds items in order.") == 1
    no_pass = preferences.build(db, "kto", pass_weight=0)
    assert "Pass" not in no_pass.counts["label"]
    assert {r["completion"][0]["content"] for r in no_pass.rows}.isdisjoint(
        {"a list holds items in order.", "cool it in cold water, then peel it."})


def test_pass_weight_is_made_by_repetition_to_the_nearest_quarter_fraction():
    db = connect()
    rated_log(db)
    three_quarters = preferences.build(db, "kto", pass_weight=0.75)
    texts = [r["completion"][0]["content"] for r in three_quarters.rows]
    assert texts.count("put it in boiling water for nine minutes.") == 4  # Excellent
    assert texts.count("the fox the fox the fox") == 4  # Fail, as strong as Excellent
    assert texts.count("a list holds items in order.") == 3  # Pass
    assert preferences.copies(0.6) == (2, 3) and preferences.copies(1) == (1, 1) and preferences.copies(0) == (0, 1)
    with pytest.raises(PreferenceError, match="pass_weight 0.1 is below 1/4.*set 0 to leave Pass out"):
        preferences.build(db, "kto", pass_weight=0.1)
    with pytest.raises(PreferenceError, match="pass_weight must be between 0 and 1, got 2"):
        preferences.build(db, "kto", pass_weight=2)


def test_a_rater_filter_keeps_only_what_that_rater_said():
    db = connect()
    [turn] = conversation(db, "lima-dialogue", [("name a colour", "the fox the fox")])
    other = conversation(db, "lima-dialogue", [("name a fruit", "an apple")])
    chatlog.rate(db, turn, "Fail", "alice")
    chatlog.rewrite(db, turn, "Blue.", "bob")
    chatlog.rate(db, other[0], "Fail", "bob")
    bobs = preferences.build(db, "kto", Filters(raters=["bob"]))
    # Alice's Fail is not Bob's: only his rewrite of that reply and his own Fail count
    assert [(r["completion"][0]["content"], r["label"]) for r in bobs.rows] == [("Blue.", True), ("an apple", False)]
    assert bobs.counts["rater"] == {"bob": 2} and len(bobs.rating_ids) == 1
    assert bobs.conversations == [db["turns"].get(other[0])["conversation_id"]]


def test_since_is_an_iso_date_compared_in_utc():
    db = connect()
    rated_log(db)
    today = db.execute("select min(created) from ratings").fetchone()[0][:10]
    assert len(preferences.build(db, "kto", Filters(since=today)).rows) == 6
    # midnight at UTC+1 is 23:00 UTC the day before: everything rated today (UTC) counts
    assert len(preferences.build(db, "kto", Filters(since=f"{today}T00:00:00+01:00")).rows) == 6
    assert preferences.utc_since("2026-11-01T02:30:00+02:00") == "2026-11-01T00:30:00.000Z"
    with pytest.raises(PreferenceError, match="since must be an ISO date such as 2026-11-01.*got 'yesterday'"):
        preferences.build(db, "kto", Filters(since="yesterday"))


def test_kto_weights_the_rarer_class_up_unless_the_recipe_says():
    db = connect()
    rated_log(db)
    data = preferences.build(db, "kto")  # 4 desirable rows (Excellent, 2 Pass, the rewrite), 2 Fail
    recipe = recipes.load("cpu-demo")
    block = preference.trainer_block("kto", recipe, data)
    assert block["undesirable_weight"] == 2 and "desirable_weight" not in block
    assert block["num_train_epochs"] == recipe.kto["num_train_epochs"]
    fixed = recipes.load("cpu-demo", ["kto.undesirable_weight=1.5"])
    assert preference.trainer_block("kto", fixed, data)["undesirable_weight"] == 1.5
    assert "desirable_weight" not in preference.trainer_block("kto", fixed, data)
    assert "undesirable_weight" not in preference.trainer_block("dpo", recipe, preferences.build(db, "dpo"))


def test_the_workbench_hands_its_filters_to_lima_train_as_flags():
    request = TrainRequest(stage="kto", from_model="base", expect_sha256="ab" * 32, models=["lima-dialogue", "base"],
                           raters=["rita"], openers_only=True, since="2026-11-01", service_url="http://127.0.0.1:9")
    argv = request.argv()
    assert argv[argv.index("--models"):argv.index("--models") + 3] == ["--models", "lima-dialogue", "base"]
    assert "--openers-only" in argv and argv[argv.index("--since") + 1] == "2026-11-01"
    parsed = build_parser().parse_args(["train", *argv])
    assert TrainRequest.from_args(parsed) == request  # the run the page asked for, field by field
    assert TrainRequest.from_args(parsed).filters == Filters(["lima-dialogue", "base"], ["rita"], True, "2026-11-01")
    plain = TrainRequest(variant="zero-shot", preset="lima-paper", overrides=["sft.num_train_epochs=3"], lora=True)
    assert TrainRequest.from_args(build_parser().parse_args(["train", *plain.argv()])) == plain


def test_max_rows_keeps_the_newest_ratings_and_says_so():
    db = connect()
    ids = rated_log(db)
    for turn, label, rater in ((ids["a"][0], "Fail", "alice"), (ids["a"][2], "Fail", "bob"),
                               (ids["b"][0], "Excellent", "bob")):
        time.sleep(0.01)  # the newest three, each in its own millisecond
        chatlog.rate(db, turn, label, rater)
    capped = preferences.build(db, "kto", max_rows=3)
    assert len(capped.rows) == 3 and capped.counts["label"] == {"Fail": 2, "Excellent": 1}
    newest = [r["id"] for r in db["current_ratings"].rows_where(order_by="created desc, id desc", limit=3)]
    assert sorted(capped.rating_ids) == sorted(newest)
    assert any("older ratings and rewrites: the recipe keeps the newest 3 rows (lima.preference.max_rows)" in s
               for s in capped.skipped)
    assert preferences.build(db, "kto", max_rows=100).rows == preferences.build(db, "kto").rows


def test_a_long_prompt_keeps_its_latest_exchanges_instead_of_being_dropped(tiny_variant, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_variant)
    long = [{"role": "user", "content": "the quick brown fox " * 30}, {"role": "assistant", "content": "ok " * 40},
            {"role": "user", "content": "and then?"}]
    short = [{"role": "user", "content": "and then?"}]
    rows = [{"prompt": long, "completion": [{"role": "assistant", "content": "done"}], "label": True},
            {"prompt": short, "completion": [{"role": "assistant", "content": "done"}], "label": False}]
    fitted, shortened = preference.fit_prompts(rows, tokenizer, 64)
    assert shortened == 1
    assert fitted[0]["prompt"] == [{"role": "user", "content": "and then?"}]
    assert fitted[1]["prompt"] == short  # one that fits is rendered exactly as the service would
    assert preference.fit_prompts(rows, tokenizer, 4096) == (rows, 0)
    # through the trainer: no row is dropped for its long history
    data = preferences.PreferenceSet("kto", rows)
    recipe = recipes.load("cpu-demo", [*TINY, "kto.bf16=false", "kto.max_length=64"])
    model = AutoModelForCausalLM.from_pretrained(tiny_variant)
    trainer = preference.make_trainer("kto", recipe, data, model, tokenizer, tmp_path / "run", [])
    assert len(trainer.train_dataset) == 2


def test_filters_pick_models_raters_openers_and_dates():
    db = connect()
    rated_log(db)
    by_model = preferences.build(db, "kto", Filters(models=["lima-zero-shot"]))
    assert by_model.counts["model"] == {"lima-zero-shot": 2}
    by_rater = preferences.build(db, "kto", Filters(raters=["alice"]))
    assert by_rater.counts["rater"] == {"alice": 3}
    openers = preferences.build(db, "kto", Filters(openers_only=True))
    assert openers.counts["model"] == {"lima-dialogue": 3}
    with pytest.raises(PreferenceError, match="no rated reply .*since 2999-01-01"):
        preferences.build(db, "kto", Filters(since="2999-01-01"))


def test_bad_input_is_a_clear_message_and_the_log_is_untouched():
    db = connect()
    with pytest.raises(PreferenceError, match="no rated reply .*rate replies"):
        preferences.build(db, "kto")
    fails = conversation(db, "lima-dialogue", [("q one", "bad one"), ("q two", "bad two")])
    for turn in fails:
        chatlog.rate(db, turn, "Fail", "carol")
    before = snapshot_of(db)
    with pytest.raises(PreferenceError, match="only Fail: 2 rows, every one a reply rated Fail and none rewritten"):
        preferences.build(db, "kto")
    with pytest.raises(PreferenceError, match="no rewritten reply.*DPO learns from rewrites"):
        preferences.build(db, "dpo")
    good = conversation(db, "lima-dialogue", [("q three", "fine")])
    chatlog.rate(db, fails[0], "Pass", "carol")
    chatlog.rate(db, fails[1], "Excellent", "carol")
    chatlog.rate(db, good[0], "Pass", "carol")
    with pytest.raises(PreferenceError, match="no Fail: 3 rows, every one Pass, Excellent or a rewrite"):
        preferences.build(db, "kto")
    chatlog.rate(db, good[0], "Fail", "carol")
    with pytest.raises(PreferenceError, match=r"only 3 rows .*at least 8 \(lima.preference.min_rows\)"):
        preferences.build(db, "kto", min_rows=8)
    assert len(preferences.build(db, "kto").rows) == 3
    # the log refuses a rewrite of a user turn; one written before it refused is left out, said so
    user_turn = db["turns"].get(good[0] - 1)["id"]
    with pytest.raises(chatlog.LogError, match="is a user turn"):
        chatlog.rewrite(db, user_turn, "what the person should have asked")
    db["rewrites"].insert({"turn_id": user_turn, "content": "legacy", "rater": "x", "created": "2026-01-01T00:00:00Z"})
    legacy = preferences.build(db, "kto")
    assert any(f"is of a user turn (turn {user_turn})" in s for s in legacy.skipped)
    assert "left out: rewrite" in legacy.summary()
    after = snapshot_of(db)
    assert after["ratings"][: len(before["ratings"])] == before["ratings"]
    assert after["turns"][: len(before["turns"])] == before["turns"]


def test_a_rating_changed_after_the_preview_changes_the_sha():
    db = connect()
    ids = rated_log(db)
    preview = preferences.build(db, "kto")
    assert preferences.build(db, "kto").sha256 == preview.sha256  # the same log, the same set
    chatlog.rate(db, ids["b"][1], "Pass", "bob")
    assert preferences.build(db, "kto").sha256 != preview.sha256


def test_a_set_is_read_from_one_moment_of_the_log_while_people_keep_rating():
    db = connect()
    ids = rated_log(db)
    with snapshot(db):
        first = preferences.build(db, "kto")
        chatlog.rate(connect(), ids["b"][1], "Excellent", "bob")  # the Chat tab, another connection
        chatlog.rewrite(connect(), ids["a"][2], "cool it, then peel it.", "bob")
        assert preferences.build(db, "kto").sha256 == first.sha256  # inside one read: the same log
    assert db["ratings"].count_where("turn_id = ? and label = 'Excellent'", [ids["b"][1]]) == 1  # nothing lost
    after = preferences.build(db, "kto")
    assert after.sha256 != first.sha256 and after.counts["label"]["rewrite"] == 2


@pytest.mark.parametrize("stage", ["kto", "dpo"])
def test_the_trainer_sees_the_services_prompt_then_the_reply_and_eot(stage, tiny_variant, tmp_path):
    db = connect()
    rated_log(db)
    data = preferences.build(db, stage)
    recipe = recipes.load("cpu-demo", [*TINY, f"{stage}.bf16=false"])
    model = AutoModelForCausalLM.from_pretrained(tiny_variant)
    tokenizer = AutoTokenizer.from_pretrained(tiny_variant)
    trainer = preference.make_trainer(stage, recipe, data, model, tokenizer, tmp_path / "run", [])
    eot = tokenizer.convert_tokens_to_ids(chat_format.EOT)

    async def served(prompts):
        engine = TransformersEngine(quantize="none")
        await engine.add_model("lima", str(tiny_variant))
        out = [(await engine.prepare("lima", p, SamplingParams())).payload["ids"] for p in prompts]
        await engine.close()
        return out

    rows = list(trainer.train_dataset)
    prompts = asyncio.run(served([[m for m in r["prompt"]] for r in rows])) if "prompt" in rows[0] else None
    for row, prompt_ids in zip(rows, prompts):
        assert row["prompt_ids"] == prompt_ids  # the very ids the service would answer
        completions = ("completion",) if stage == "kto" else ("chosen", "rejected")
        for key in completions:
            ids = row[f"{key}_ids"]
            reply = row[key][0]["content"]
            # the reply, its EOT (the service's stop token), and the template's newline after it
            assert ids[: ids.index(eot) + 1] == tokenizer.encode(reply, add_special_tokens=False) + [eot]
            assert tokenizer.decode(ids[ids.index(eot) + 1:]) == "\n"
