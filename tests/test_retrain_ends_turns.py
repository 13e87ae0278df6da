"""The real embedded model, retrained with cpu-demo: it learns to end its turns, and does not ramble.

The run is cpu-demo as the Retrain tab starts it, on the real LIMA data, cut to 2 optimizer steps
(of 14) to fit CI: the EOT row is fitted before training and again when the run stops. Its own
measurement (``training/behaviour.py``) holds the 10 openers with one follow-up each (20 replies,
at most 300 new tokens, seeded) with the base and with the new model.
"""

import pytest
import torch

from dialogues import lima_data
from lima.store import behaviour as store, connect
from service.engines.transformers_engine import load_model
from lima.store import runs
from training import behaviour, recipe as recipes, sft, train
from training.request import TrainRequest
from tests.conftest import LIMA_DATA

pytestmark = pytest.mark.slow
TRAIN = LIMA_DATA / "train.jsonl"
PLAN = ["lima.behaviour.dev_prompts=0", "lima.behaviour.openers=10", "lima.behaviour.follow_ups=1",
        "lima.behaviour.max_new_tokens=300", "lima.behaviour.references=8"]


@pytest.mark.skipif(not TRAIN.exists(), reason=f"the LIMA data is not at {TRAIN}")
def test_a_cpu_demo_retrain_ends_its_turns_at_least_as_often_as_the_base(embedded_model):
    # cpu-demo's own numbers (not the tiny test recipe), as the Retrain tab starts it
    train.run(TrainRequest(variant="dialogue", preset="cpu-demo", lima=str(TRAIN), base=str(embedded_model),
                           max_steps=2, overrides=PLAN))
    db = connect()
    [run] = runs.history(db)
    assert run.status == "done" and run.max_steps == 2
    fits = runs.get(db, run.id).eot_fit
    assert [f["step"] for f in fits] == [0, 2]  # fitted before training and when it stopped

    # the EOT token is learnt: likely where the answers it trained on end
    recipe = recipes.load("cpu-demo", PLAN)
    dataset = sft.build_dataset(recipe, "dialogue", lima_data.load(TRAIN), "project")
    model, tokenizer = load_model("trained", run.model_path, "cpu", torch.float32)
    ends = behaviour.end_probabilities(model, tokenizer, dataset.examples, recipe.max_length)
    p_eot = sum(e for _, e in ends) / len(ends)
    assert len(ends) >= 50 and p_eot > 0.5, f"P(EOT) at the end of trained answers: {p_eot:.3f}"

    # and the new model ends its replies at least as often as the base, no longer and no loopier
    measured = store.for_run(db, run.id)
    base, new = measured["parent"].figures, measured["model"].figures
    shown = f"base: {behaviour.line(base)}; new: {behaviour.line(new)}"
    assert base.replies == new.replies == 20, shown
    assert new.ended >= base.ended and new.median_tokens <= 2 * base.median_tokens, shown
    assert new.loops <= base.loops + 0.1 and not run.warning, shown
