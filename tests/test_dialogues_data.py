"""The shipped chains and openers: exact counts, shape, and the promises dialogues/README.md makes."""

from collections import Counter

from dialogues import jsonl, project
from dialogues.schema import Chain, Opener

README = (project.HERE / "README.md").read_text()


def test_thirty_chains_ten_openers():
    chains, openers = project.chains(), project.openers()
    assert len(chains) == 30 and len(openers) == 10
    assert Counter(c.kind for c in chains) == {"open": 10, "technical": 20}


def test_chain_shape():
    chains = project.chains()
    turns = Counter(c.user_turns for c in chains)
    assert min(turns) >= 2
    assert sum(n for t, n in turns.items() if 3 <= t <= 5) > len(chains) / 2  # most 3 to 5
    assert max(turns) > 5  # some longer
    first = [len(c.messages[1].content) for c in chains]
    assert sum(800 <= n <= 2500 for n in first) >= 25  # a first answer typically 800-2,500 characters
    tags = Counter(t for c in chains for t in c.tags)
    assert tags["declines-harmful-request"] >= 2 and tags["corrects-premise"] >= 2


def test_openers_cover_distinct_tasks_and_new_topics():
    chains, openers = project.chains(), project.openers()
    assert len({o.task for o in openers}) == 10
    assert all(2 <= len(o.follow_ups) <= 4 for o in openers)
    assert project.topic_overlap(chains, openers) == set()


def test_readme_topic_tables_match_the_files():
    for chain in project.chains():
        row = f"| {chain.id} | {chain.kind} | {chain.topic} | {chain.user_turns} | {', '.join(chain.tags)} |"
        assert row.replace("|  |", "| |") in README, row
    for opener in project.openers():
        assert f"| {opener.id} | {opener.task} | {opener.topic} | {len(opener.follow_ups)} |" in README


def test_round_trip_keeps_every_field(tmp_path):
    for loader, model in ((project.chains, Chain), (project.openers, Opener)):
        records = loader()
        path = jsonl.write(tmp_path / f"{model.__name__}.jsonl", records)
        assert jsonl.load(path, model) == records
