"""The paper's two training sets, each recorded with its sha256 and counts per source.

    zero-shot = LIMA's 1,000 single-turn examples
    dialogue  = the same 1,000 + 30 dialogue chains, which are
                "project" (dialogues/chains.jsonl, default), "lima" (LIMA's own multi_turn rows),
                or a chains file (e.g. exported from rated live conversations)
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dialogues import jsonl, project
from dialogues.jsonl import DataError
from dialogues.lima_data import LimaData
from dialogues.schema import Chain, Example
from lima.paper import VARIANTS



@dataclass
class TrainingSet:
    variant: str
    chains: str
    examples: list[Example]
    counts: dict[str, int] = field(default_factory=dict)
    sha256: str = ""

    def describe(self) -> dict:
        return {"variant": self.variant, "chains": self.chains, "examples": len(self.examples),
                "counts": self.counts, "sha256": self.sha256}


def fingerprint(examples: list[Example]) -> str:
    """sha256 over the messages in order: the same conversations give the same hash."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps(example.as_openai(), ensure_ascii=False, sort_keys=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def resolve_chains(chains: str, lima: LimaData) -> list[Chain]:
    if chains == "project":
        return project.chains()
    if chains == "lima":
        return lima.multi
    path = Path(chains)
    if not path.exists():
        raise DataError(f"--chains must be 'project', 'lima' or a chains file; {chains} does not exist")
    found = jsonl.load(path, Chain)
    if not found:
        raise DataError(f"{path}: no dialogue chains")
    return found


def build(variant: str, lima: LimaData, chains: str = "project") -> TrainingSet:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant '{variant}': choose one of {', '.join(VARIANTS)}")
    if not lima.single:
        raise DataError(f"{lima.origin}: no single-turn examples")
    examples: list[Example] = list(lima.single)
    if variant == "dialogue":
        examples += resolve_chains(chains, lima)
    counts = dict(sorted(Counter(e.source for e in examples).items()))
    return TrainingSet(variant, chains if variant == "dialogue" else "none", examples, counts, fingerprint(examples))
