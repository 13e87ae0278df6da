"""LIMA from the local copy: 1,000 single-turn, 30 multi-turn, the two training sets of the paper."""

import json

import pytest

from dialogues import lima_data, training_sets
from dialogues.jsonl import DataError
from tests.conftest import LIMA_DATA

TRAIN = LIMA_DATA / "train.jsonl"
needs_lima = pytest.mark.skipif(not TRAIN.exists(), reason=f"the LIMA data is not at {TRAIN}")


@pytest.fixture(scope="module")
def lima():
    if not TRAIN.exists():
        pytest.skip(f"the LIMA data is not at {TRAIN}")
    with pytest.warns(lima_data.TrimmedTurnWarning, match="ends on a user turn; trimmed"):
        return lima_data.load(TRAIN)


@needs_lima
def test_counts_and_trimmed_dialogue(lima):
    assert len(lima.single) == 1000 and len(lima.multi) == 30
    assert all(e.user_turns == 1 for e in lima.single)
    assert all(c.messages[-1].role == "assistant" and c.user_turns >= 2 for c in lima.multi)


@needs_lima
def test_zero_shot_and_dialogue_sets(lima):
    zero = training_sets.build("zero-shot", lima)
    dialogue = training_sets.build("dialogue", lima)
    assert len(zero.examples) == 1000 and len(dialogue.examples) == 1030
    assert dialogue.counts["project"] == 30
    assert sum(zero.counts.values()) == 1000
    assert zero.counts == {k: v for k, v in dialogue.counts.items() if k != "project"}
    assert zero.counts["lima/stackexchange"] == 400
    assert len(dialogue.sha256) == 64 and dialogue.sha256 != zero.sha256
    assert training_sets.build("dialogue", lima).sha256 == dialogue.sha256  # deterministic


@needs_lima
def test_dialogue_with_lima_chains_or_a_file(lima, tmp_path):
    with_lima = training_sets.build("dialogue", lima, chains="lima")
    assert with_lima.counts["lima/multi_turn"] == 30 and len(with_lima.examples) == 1030
    from dialogues import jsonl, project

    path = jsonl.write(tmp_path / "live.jsonl", project.chains()[:5])
    from_file = training_sets.build("dialogue", lima, chains=str(path))
    assert len(from_file.examples) == 1005 and from_file.counts["project"] == 5
    with pytest.raises(DataError, match="must be 'project', 'lima' or a chains file"):
        training_sets.build("dialogue", lima, chains=str(tmp_path / "nope.jsonl"))
    with pytest.raises(ValueError, match="unknown variant 'few-shot'"):
        training_sets.build("few-shot", lima)


def test_wrong_format_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"conversations": ["q", "a"], "source": "x"}) + "\n"
                    + json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl:2: conversations: expected a non-empty list of strings"):
        lima_data.load(path)
    path.write_text(json.dumps({"conversations": ["q", 3], "source": "x"}) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl:1: conversations\[1\]: expected a string, got int"):
        lima_data.load(path)
    path.write_text(json.dumps({"conversations": ["q", ""], "source": "x"}) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl:1: messages\[1\].content: empty turn"):
        lima_data.load(path)


def test_empty_dataset_is_refused(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        lima_data.load(path)


def test_hub_without_token_says_what_to_do(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    with pytest.raises(DataError, match="gated dataset: set HF_TOKEN"):
        lima_data.load("GAIR/lima")
