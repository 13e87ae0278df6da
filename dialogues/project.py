"""The project's own data: 30 dialogue chains and 10 evaluation openers, shipped with the package."""

from __future__ import annotations

from pathlib import Path

from dialogues import jsonl
from dialogues.schema import Chain, Opener

HERE = Path(__file__).resolve().parent
CHAINS_PATH = HERE / "chains.jsonl"
OPENERS_PATH = HERE / "openers.jsonl"
CHAIN_COUNT, OPENER_COUNT = 30, 10


def chains(path: str | Path = CHAINS_PATH, expected: int | None = CHAIN_COUNT) -> list[Chain]:
    return jsonl.load(path, Chain, expected)


def openers(path: str | Path = OPENERS_PATH, expected: int | None = OPENER_COUNT) -> list[Opener]:
    return jsonl.load(path, Opener, expected)


def topic_overlap(chain_list: list[Chain], opener_list: list[Opener]) -> set[str]:
    """Topics that both an evaluation opener and a training chain cover (must be none)."""
    return {c.topic.lower() for c in chain_list if c.topic} & {o.topic.lower() for o in opener_list}
