"""Validate the dialogue data and print what it contains.

    lima dialogues check [--chains dialogues/chains.jsonl] [--openers dialogues/openers.jsonl] [--lima PATH]

Counts, user turns per chain, answer lengths, the topics, whether any evaluation opener shares a
topic with a training chain, and (with --lima) the two training sets the data builds.
"""

from __future__ import annotations

import statistics
import sys
import warnings
from collections import Counter

from lima import paper
from dialogues import lima_data, project, training_sets
from dialogues.jsonl import DataError


def spread(values: list[int]) -> str:
    return f"min {min(values)}, median {statistics.median(values):g}, max {max(values)}"


def report(chains_path: str, openers_path: str, lima: str | None) -> list[str]:
    chains = project.chains(chains_path)
    openers = project.openers(openers_path)
    lines = [f"chains: {len(chains)} ({', '.join(f'{n} {k}' for k, n in sorted(Counter(c.kind for c in chains).items()))})"]
    turns = [c.user_turns for c in chains]
    lines.append(f"  user turns per chain: {spread(turns)}; "
                 + ", ".join(f"{k} turns: {n}" for k, n in sorted(Counter(turns).items())))
    first = [len(c.messages[1].content) for c in chains]
    later = [len(m.content) for c in chains for m in c.messages[3::2]]
    lines.append(f"  first answer, characters: {spread(first)}; "
                 f"{sum(800 <= n <= 2500 for n in first)} of {len(first)} within 800-2,500")
    lines.append(f"  later answers, characters: {spread(later)}")
    tags = Counter(t for c in chains for t in c.tags)
    lines.append("  tags: " + (", ".join(f"{t} {n}" for t, n in sorted(tags.items())) or "none"))
    lines.append(f"openers: {len(openers)}, follow-ups per opener: {spread([len(o.follow_ups) for o in openers])}")
    lines.append("  tasks: " + ", ".join(o.task for o in openers))
    overlap = project.topic_overlap(chains, openers)
    lines.append("  topic overlap with chains: " + (", ".join(sorted(overlap)) or "none"))
    if overlap:
        raise DataError(f"{openers_path}: openers share topics with training chains: {', '.join(sorted(overlap))}")
    if lima:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = lima_data.load(lima)
        lines.append(f"LIMA {data.origin}: {len(data.single)} single-turn, {len(data.multi)} multi-turn")
        lines += [f"  warning: {w.message}" for w in caught]
        for variant in paper.VARIANTS:
            built = training_sets.build(variant, data)
            lines.append(f"  {variant}: {len(built.examples)} examples, sha256 {built.sha256[:16]}…, {built.counts}")
    return lines


def main(args) -> int:
    try:
        lines = report(args.chains, args.openers, args.lima)
    except DataError as exc:
        print(f"lima dialogues check: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def add_arguments(parser) -> None:
    parser.add_argument("--chains", default=str(project.CHAINS_PATH), help="dialogue chains JSONL")
    parser.add_argument("--openers", default=str(project.OPENERS_PATH), help="evaluation openers JSONL")
    parser.add_argument("--lima", help="also load LIMA from this JSONL file or hub id and build both training sets")
