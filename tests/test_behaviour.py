"""The behaviour figures: loops, summaries, what counts as clearly worse, and how they are stored."""

import pytest

from lima.store import behaviour as store, connect
from lima.store.behaviour import Figures, Reply
from lima.store import runs
from training import behaviour


def reply(tokens: int, ended: bool = True, text: str = "a short answer", loop: bool = False) -> Reply:
    return Reply("dev", "dev-01", 0, "a prompt", text, tokens, ended, loop)


def figures(**kw) -> Figures:
    values = dict(replies=40, ended=0.95, median_tokens=70.0, p90_tokens=180.0, loops=0.0, references=20,
                  p_end=0.4, p_eot=None, max_new_tokens=400)
    return Figures(**(values | kw))


def test_a_loop_is_a_run_of_words_that_comes_back():
    looping = "Step one is to mix the flour and the water well. " * 3
    assert behaviour.has_loop(looping)
    assert not behaviour.has_loop("Step one is to mix the flour and the water well. " * 2)
    listing = "\n".join(f"{i}. Read chapter {i} of the book and write down the words you do not know" for i in (1, 2))
    assert not behaviour.has_loop(listing)


def test_summaries_count_endings_lengths_loops_and_end_probabilities():
    replies = [reply(10), reply(20), reply(30, loop=True), reply(400, ended=False)]
    replies[0].judge_score, replies[1].judge_score = 5, 3
    result = behaviour.summarise(replies, [(0.5, 0.25), (0.3, 0.15)], 400)
    assert result.replies == 4 and result.ended == 0.75 and result.loops == 0.25
    assert result.median_tokens == 25 and result.p90_tokens == pytest.approx(289)  # numpy's linear interpolation
    assert result.references == 2 and (result.p_end, result.p_eot) == pytest.approx((0.4, 0.2))
    assert (result.judge_mean, result.judged) == (4, 2)
    parent = behaviour.summarise([reply(10)], [(0.5, None)], 400)
    assert parent.p_eot is None  # a base without the EOT token
    empty = behaviour.summarise([], [], 400)
    assert empty.ended is None and empty.median_tokens is None and empty.p_end is None


def test_clearly_worse_means_far_outside_reseeding_noise():
    parent = figures(judge_mean=4.0)
    assert behaviour.regressions(parent, figures(ended=0.90, median_tokens=130.0, judge_mean=3.6)) == []
    worse = behaviour.regressions(parent, figures(ended=0.44, median_tokens=400.0, loops=0.2, p_end=0.1,
                                                  judge_mean=3.0))
    assert len(worse) == 5
    assert worse[0] == "ends 44% of its replies by itself, its parent 95%"
    assert "median reply 400 tokens, its parent's 70" in worse
    assert behaviour.regressions(parent, figures(p_end=None, judge_mean=None)) == []  # what is missing is not worse


def test_measurements_are_stored_per_run_and_a_parent_is_found_again(tiny_base):
    db = connect()
    for run_id in ("run-1", "run-2"):
        runs.start(db, run_id, variant="dialogue", preset="cpu-demo")
        runs.finish(db, run_id, "done")
    measured = figures()
    store.save(db, "run-1", "parent", "base", "/models/base", "key-a", measured, [reply(12), reply(400, False)])
    store.save(db, "run-1", "model", "lima-dialogue", "/models/new", "key-a", figures(ended=0.5))
    found = store.find(db, "/models/base", "key-a")
    assert found.figures == measured and found.measured_in == "run-1"
    assert store.find(db, "/models/base", "key-b") is None  # other prompts or settings: measured again
    store.save(db, "run-2", "parent", "base", "/models/base", "key-a", found.figures, measured_in="run-1")
    again = store.for_run(db, "run-2")["parent"]
    assert again.measured_in == "run-1" and [r.tokens for r in store.replies(db, again)] == [12, 400]
    assert store.find(db, "/models/base", "key-a").measured_in == "run-1"  # a reuse is not a measurement
    both = store.for_runs(db, ["run-1", "run-2"])
    assert set(both["run-1"]) == {"parent", "model"} and both["run-1"]["model"].figures.ended == 0.5


@pytest.mark.parametrize("which", ["tiny_base", "tiny_variant"])  # its own template; LIMA's with EOT
def test_end_probabilities_read_every_turn_end_of_a_conversation_in_one_pass(which, request):
    """One forward pass per conversation gives what a pass per turn gives, and a turn past the
    token limit ends the conversation's reading."""
    import torch

    from dialogues.schema import Example
    from lima import chat_format
    from service.engines.transformers_engine import load_model
    from tests.helpers.training import QUESTIONS

    model, tokenizer = load_model("m", str(request.getfixturevalue(which)), "cpu", torch.float32)
    chains = [Example(id=f"chain-{i}", source="project", messages=[
        {"role": "user", "content": q}, {"role": "assistant", "content": f"first, the quick brown fox {i}."},
        {"role": "user", "content": "thanks, what then?"}, {"role": "assistant", "content": "then check the result."}])
        for i, q in enumerate(QUESTIONS[:3])]
    stops = sorted(chat_format.stop_token_ids(model, tokenizer))
    expected, lengths = [], []
    for chain in chains:
        messages = chain.as_openai()
        for k in (1, 3):
            text = tokenizer.apply_chat_template(messages[:k], add_generation_prompt=True, tokenize=False)
            ids = tokenizer(text + messages[k]["content"], add_special_tokens=False).input_ids
            lengths.append(len(ids))
            with torch.inference_mode():
                expected.append(float(model(torch.tensor([ids])).logits[0, -1].softmax(-1)[stops].sum()))
    got = behaviour.end_probabilities(model, tokenizer, chains, 4096)
    assert [p for p, _ in got] == pytest.approx(expected, rel=1e-4)
    assert all((e is None) == (which == "tiny_base") for _, e in got)
    limit = max(lengths[::2])
    assert limit < min(lengths[1::2])
    first_turns = behaviour.end_probabilities(model, tokenizer, chains, limit)  # every second turn is longer
    assert [p for p, _ in first_turns] == pytest.approx(expected[::2], rel=1e-4)
