"""`lima train --stage kto|dpo` on the tiny model: learnt from exactly the rated replies, recorded,
registered under its own name, served; refused with the reason, cancelled cleanly."""

import json
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from dialogues import preferences
from evaluation import comparisons, report
from lima.service_client import ServiceClient
from lima.store import chatlog, connect
from lima.store.registry import register, registered
from lima.store import runs
from lima.store import behaviour as behaviour_store
from training import common, launcher, train
from tests.helpers.ratings import rated_log
from tests.helpers.server import serving
from tests.helpers.training import TINY, stage_args
from lima.children import lima_command


@pytest.fixture
def rated(tiny_variant):
    db = connect()
    register(db, "lima-dialogue", str(tiny_variant), kind="trained")
    return rated_log(db)


def changed(before_folder, after_folder) -> bool:
    key = "model.layers.0.mlp.down_proj.weight"
    return not torch.equal(load_file(f"{before_folder}/model.safetensors")[key],
                           load_file(f"{after_folder}/model.safetensors")[key])


def test_kto_learns_from_exactly_the_rated_replies(rated, tiny_variant):
    db = connect()
    expected = preferences.build(db, "kto")
    summary = train.run(stage_args("kto"))
    [run] = runs.history(db)
    record = runs.get(db, run.id)
    assert record.status == "done" and record.stage == "kto" and record.from_model == "lima-dialogue"
    assert record.rating_ids["ratings"] == expected.rating_ids and len(expected.rating_ids) == 5
    assert record.rating_ids["rewrites"] == expected.rewrite_ids
    assert record.dataset_sha256 == expected.sha256 and record.dataset_counts == expected.counts
    steps = runs.losses(db, run.id)
    assert len(steps) == record.max_steps > 0 and all(s.loss is not None for s in steps)
    assert any(s.reward_margin is not None for s in steps)  # the chart's data
    folder = registered(db)["lima-dialogue-kto"]
    assert record.model_path == folder and "lima-dialogue-kto" in summary
    assert changed(tiny_variant, folder)
    provenance = json.loads(open(f"{folder}/lima_run.json").read())
    assert provenance["learnt_from"]["ratings"] == expected.rating_ids and provenance["from"] == "lima-dialogue"
    assert provenance["recipe"]["kto"]["num_train_epochs"] == 3  # the cpu-demo preset's block


def test_dpo_model_is_served_then_compared_before_and_after_and_reported(rated, tiny_variant, tmp_path):
    serve = ["--no-registry", "--base-model", "none", "--model", f"lima-dialogue={tiny_variant}", "--quantize", "none"]
    with serving(serve, tmp_path / "serve.log") as base:
        summary = train.run(stage_args("dpo", service_url=base))
        assert f"now served as 'lima-dialogue-dpo' by {base}" in summary
        served = [m["id"] for m in httpx.get(base + "/v1/models").json()["data"]]
        assert {"lima-dialogue", "lima-dialogue-dpo"} <= set(served)
        client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(model="lima-dialogue-dpo", max_tokens=8,
                                               messages=[{"role": "user", "content": "and then?"}])
        assert reply.usage.completion_tokens >= 1
        # the proof: the conversation rated Fail, replayed on the model before and the model after
        failed = connect()["turns"].get(rated["a"][1])["conversation_id"]
        steps = list(comparisons.before_after(ServiceClient(base), failed, "lima-dialogue", "lima-dialogue-dpo",
                                              "rita", max_tokens=8))
        session, problems = steps[-1]
        assert problems == {} and len(steps) > 6  # it streamed: one step per piece, not one at the end
    db = connect()
    row = db["comparisons"].get(session.comparison_id)
    assert (row["kind"], row["left_model"], row["right_model"]) == ("before-after", "lima-dialogue",
                                                                    "lima-dialogue-dpo")
    for side in ("left", "right"):
        said = chatlog.conversation(db, row[f"{side}_conversation"])["turns"]
        assert [t["content"] for t in said if t["role"] == "user"] == ["how do i boil an egg?", "and then?",
                                                                      "thanks, what next?"]
        assert [t["model"] for t in said if t["role"] == "assistant"] == [row[f"{side}_model"]] * 3
    after = session.chats["right"].turn_ids[1]
    chatlog.rate(db, after, "Excellent", "rita")
    comparisons.record_verdict(db, session.comparison_id, "right", "rita")
    shown = report.build(db)
    assert {s.model: s.counts for s in shown.models}["lima-dialogue-dpo"] == {"Excellent": 1}
    assert "lima-dialogue-dpo better in 1 of 1" in report.markdown(shown)
    [run] = runs.history(db)
    assert runs.get(db, run.id).rating_ids["rewrites"] == preferences.build(db, "dpo").rewrite_ids
    steps = runs.losses(db, run.id)
    assert steps and all(s.reward_margin is not None for s in steps)  # DPO logs a margin every step


def test_lora_kto_is_merged_into_a_full_folder_and_max_steps_applies(rated, tiny_variant):
    db = connect()
    train.run(stage_args("kto", lora=True, max_steps=2))
    [run] = runs.history(db)
    record = runs.get(db, run.id)
    assert record.status == "done" and record.max_steps == 2
    folder = registered(db)["lima-dialogue-kto"]
    assert not list(Path(folder).glob("adapter_*"))  # a full folder the service (and vLLM) load as is
    assert changed(tiny_variant, folder)
    assert AutoModelForCausalLM.from_pretrained(folder).config.vocab_size == \
        AutoModelForCausalLM.from_pretrained(tiny_variant).config.vocab_size


def test_refusals_name_the_reason_and_record_nothing(rated):
    db = connect()
    ratings_before = list(db["ratings"].rows)
    with pytest.raises(common.TrainingError, match="no model named 'lima-gone' to start from .*lima-dialogue"):
        train.run(stage_args("kto", from_model="lima-gone"))
    with pytest.raises(common.TrainingError, match="the ratings changed after the set was previewed"):
        train.run(stage_args("kto", expect_sha256="0" * 64))
    with pytest.raises(preferences.PreferenceError, match="no Fail: 1 row, every one Pass"):
        train.run(stage_args("kto", models=["lima-dialogue"], raters=["bob"], extra=["lima.preference.min_rows=1"]))
    assert runs.history(db) == [] and list(db["ratings"].rows) == ratings_before
    # through the command: one line on stderr, exit 2
    result = subprocess.run([*lima_command(), "train", "--variant", "dialogue", "--stage", "dpo",
                             "--raters", "bob"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("lima train: no rewritten reply (raters bob)")


def test_replies_of_a_model_no_longer_registered_are_said_so(rated, capsys):
    db = connect()
    train.run(stage_args("dpo"))
    assert "lima-zero-shot" not in registered(db)
    train_out = capsys.readouterr().out
    assert "DPO set from the ratings: 1 DPO pair (rewrite" in train_out
    chatlog.rate(db, rated["b"][0], "Excellent", "bob")
    train.run(stage_args("kto", from_model="lima-dialogue-dpo"))
    out = capsys.readouterr().out
    assert "note: lima-zero-shot no longer registered; their replies are learnt from as they were said" in out
    assert "lima-dialogue-dpo-kto" in registered(db)


def test_cancel_stops_a_preference_run_and_registers_nothing(rated, lima_home):
    sets = [f"--set={s}" for s in [*TINY, "dpo.bf16=false", "dpo.num_train_epochs=500"]]
    process = subprocess.Popen([*lima_command(), "train", "--variant", "dialogue", "--stage", "dpo",
                                *sets], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    db = connect()
    deadline, history = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        history = runs.history(db)
        if history and (history[0].step or 0) >= 2:
            break
        time.sleep(0.2)
    process.send_signal(15)  # SIGTERM, as the workbench's hard stop: a cancel at the next step
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 0, output
    record = runs.get(db, history[0].id)
    assert record.status == "cancelled" and record.error.startswith("cancelled at step"), output
    assert set(registered(db)) == {"lima-dialogue"}
    assert not (lima_home / "runs" / record.id).exists()


def test_a_stage_starts_from_base_the_name_the_chat_shows(rated, tiny_base):
    """A newcomer's first ratings are of `base`'s replies: `--from base` learns on top of the base
    model, whose new EOT row is fitted on the replies the set wants more of."""
    db = connect()
    assert launcher.starting_models() == ["lima-dialogue", "base"]  # what the Retrain tab offers
    train.run(stage_args("kto", from_model="base", base=str(tiny_base)))
    [run] = runs.history(db)
    assert run.status == "done" and run.from_model == "base" and run.base == str(tiny_base)
    assert run.model_name == "base-kto" and registered(db)["base-kto"] == run.model_path
    assert [f["step"] for f in run.eot_fit][0] == 0 and run.eot_fit[0]["answer_ends"] >= 1
    assert behaviour_store.for_run(db, run.id)["parent"].path == str(tiny_base)  # measured beside the base
    with pytest.raises(common.TrainingError, match=r"these can: lima-dialogue, base-kto, base"):
        train.run(stage_args("kto", from_model="nothing"))
