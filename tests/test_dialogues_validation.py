"""Bad data files are refused with file:line and the field, and nothing is written."""

import json

import pytest

from dialogues import jsonl, project
from dialogues.jsonl import DataError
from dialogues.schema import Chain, Opener
from lima.children import lima_command

GOOD = {"id": "c1", "source": "project", "kind": "open", "topic": "t", "tags": [],
        "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                     {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}


def write_lines(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def with_messages(*pairs, **extra):
    return {**GOOD, **extra, "messages": [{"role": r, "content": c} for r, c in pairs]}


@pytest.mark.parametrize("bad, expected", [
    (with_messages(("user", "a"), ("user", "b"), ("assistant", "c"), ("user", "d"), ("assistant", "e")),
     "messages[1].role: two 'user' turns in a row"),
    (with_messages(("user", "a"), ("assistant", "  "), ("user", "c"), ("assistant", "d")),
     "messages[1].content: empty turn"),
    (with_messages(("assistant", "a"), ("user", "b"), ("assistant", "c")), "the first turn must be the user's"),
    (with_messages(("user", "a"), ("assistant", "b"), ("user", "c")), "the last turn must be the assistant's"),
    (with_messages(("user", "a"), ("assistant", "b")), "at least 2 user turns, found 1"),
    (with_messages(("user", "a"), ("bot", "b"), ("user", "c"), ("assistant", "d")), "messages[1].role"),
    (with_messages(("user", 5), ("assistant", "b"), ("user", "c"), ("assistant", "d")),
     "messages[0].content: Input should be a valid string"),
    ({k: v for k, v in GOOD.items() if k != "kind"}, "kind: Field required"),
    ({k: v for k, v in GOOD.items() if k != "messages"}, "messages: Field required"),
    ({**GOOD, "mesages": []}, "mesages: Extra inputs are not permitted"),
])
def test_bad_chain_names_file_line_and_field(tmp_path, bad, expected):
    path = write_lines(tmp_path / "chains.jsonl", [GOOD | {"id": "ok"}, bad])
    with pytest.raises(DataError) as err:
        jsonl.load(path, Chain)
    assert str(err.value).startswith(f"{path}:2: ")
    assert expected in str(err.value)


def test_invalid_json_names_the_line(tmp_path):
    path = write_lines(tmp_path / "chains.jsonl", [GOOD, GOOD | {"id": "c2"}, '{"id": "c3", "messages": [', GOOD])
    with pytest.raises(DataError, match=r"chains.jsonl:3: invalid JSON: .*column"):
        jsonl.load(path, Chain)


def test_non_object_line_is_refused(tmp_path):
    path = write_lines(tmp_path / "chains.jsonl", ["[1, 2]"])
    with pytest.raises(DataError, match=r":1: expected a JSON object, got list"):
        jsonl.load(path, Chain)


def test_duplicate_id_names_both_lines(tmp_path):
    path = write_lines(tmp_path / "chains.jsonl", [GOOD, GOOD | {"id": "c2"}, GOOD])
    with pytest.raises(DataError, match=r"chains.jsonl:3: id: duplicate id 'c1' \(first on line 1\)"):
        jsonl.load(path, Chain)


def test_wrong_count_is_refused(tmp_path):
    path = write_lines(tmp_path / "chains.jsonl", [GOOD])
    with pytest.raises(DataError, match="expected 30 records, found 1"):
        project.chains(path)


def test_bad_opener(tmp_path):
    opener = {"id": "o1", "source": "project", "task": "x", "topic": "y", "message": "hi", "follow_ups": ["a"]}
    path = write_lines(tmp_path / "openers.jsonl", [opener])
    with pytest.raises(DataError, match=r"openers.jsonl:1: follow_ups: List should have at least 2 items"):
        jsonl.load(path, Opener)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="missing.jsonl: file not found"):
        jsonl.load(tmp_path / "missing.jsonl", Chain)


def test_failed_write_leaves_the_old_file(tmp_path):
    target = write_lines(tmp_path / "out.jsonl", [GOOD])
    before = target.read_text()

    def records():
        yield Chain.model_validate(GOOD)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        jsonl.write(target, records())
    assert target.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_check_command_reports_the_bad_line(tmp_path, capsys):
    import subprocess

    path = write_lines(tmp_path / "chains.jsonl", [GOOD, "not json"])
    result = subprocess.run([*lima_command(), "dialogues", "check", "--chains", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert f"{path}:2: invalid JSON" in result.stderr


def test_check_command_prints_statistics():
    import subprocess

    result = subprocess.run([*lima_command(), "dialogues", "check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "chains: 30 (10 open, 20 technical)" in result.stdout
    assert "openers: 10" in result.stdout and "topic overlap with chains: none" in result.stdout
