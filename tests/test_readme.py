"""The README keeps its promises: two set-up commands, CI calls the test one, a tree of every file."""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def tracked_files() -> set[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return {line for line in out.splitlines() if line and (REPO / line).exists()}


def tree_entries() -> dict[str, str]:
    block = README.split("## Files", 1)[1].split("```", 2)[1]
    rows = [re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in block.strip().splitlines()]
    return {row[0]: row[1] if len(row) > 1 else "" for row in rows}


def test_every_file_is_in_the_tree_with_a_description():
    entries = tree_entries()
    assert sorted(tracked_files() - set(entries)) == []
    assert sorted(set(entries) - tracked_files()) == []
    assert all(entries.values())


def test_two_setup_commands_and_ci_runs_the_test_one():
    setup = README.split("## Set up", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in setup.strip().splitlines()]
    assert commands == ["make up", "make test"]
    assert "make test" in (REPO / ".ci" / "run").read_text()
