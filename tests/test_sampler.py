"""The batched sampler: per-row settings, and the stop tokens exempt from the repetition penalty."""

import json

import pytest
import torch

from service.engines.constraints import Grammars
from service.engines.sampler import BatchSampler
from service.sampling import SamplingParams
from tests.helpers.tiny_model import build_tokenizer

EOT, OTHER, FRESH = 3, 5, 7


def test_stop_tokens_are_never_penalised_as_already_seen():
    """Every LIMA prompt contains the end-of-turn token; penalising it delays every ending."""
    greedy = SamplingParams(temperature=0, repetition_penalty=2.0)
    logits = torch.zeros(1, 10)
    logits[0, EOT], logits[0, OTHER], logits[0, FRESH] = 4.0, 5.0, 3.0
    exempt = BatchSampler(10, torch.device("cpu"), exempt={EOT})
    exempt.add_row(greedy, [EOT, OTHER, 1])
    # OTHER (5.0, seen) is halved to 2.5; EOT (4.0, seen, exempt) stays and wins
    assert int(exempt.sample(logits.clone())[0]) == EOT
    plain = BatchSampler(10, torch.device("cpu"))
    plain.add_row(greedy, [EOT, OTHER, 1])
    # without the exemption both seen tokens are halved and the unseen FRESH (3.0) wins
    assert int(plain.sample(logits.clone())[0]) == FRESH


def test_each_row_keeps_its_own_penalty():
    logits = torch.zeros(2, 10)
    logits[:, OTHER], logits[:, FRESH] = 5.0, 3.0
    sampler = BatchSampler(10, torch.device("cpu"))
    sampler.add_row(SamplingParams(temperature=0, repetition_penalty=2.0), [OTHER])
    sampler.add_row(SamplingParams(temperature=0, repetition_penalty=1.0), [OTHER])
    assert sampler.sample(logits).tolist() == [FRESH, OTHER]


def test_a_guided_row_can_only_spell_one_of_its_choices_then_stop():
    """vLLM's guided_choice through llguidance: at each step only tokens that continue a choice;
    a stop token once one is whole; an unguided row beside it keeps its own argmax."""
    tokenizer = build_tokenizer()
    vocab, stop = len(tokenizer), tokenizer.eos_token_id
    grammars = Grammars(tokenizer, vocab, {stop})
    choices = ("the lazy dog", "how do i boil")
    greedy = SamplingParams(temperature=0, repetition_penalty=1.0, choices=choices)
    sampler = BatchSampler(vocab, torch.device("cpu"), exempt={stop})
    sampler.add_row(greedy, [1], grammars.matcher(greedy))
    sampler.add_row(SamplingParams(temperature=0, repetition_penalty=1.0), [1])
    fox, how, the = (tokenizer.encode(word)[0] for word in ("fox", "how", "the"))
    favourite = torch.zeros(2, vocab)
    favourite[:, fox] = 10.0  # the model's favourite is in no choice
    favourite[:, how], favourite[:, the] = 2.0, 1.0
    first = sampler.sample(favourite.clone()).tolist()
    assert first[1] == fox
    spelt = [first[0]]
    while spelt[-1] != stop and len(spelt) < 20:
        spelt.append(int(sampler.sample(favourite.clone(), rows=[0])[0]))
    assert spelt[-1] == stop  # whole: the only way on is the stop token
    assert tokenizer.decode(spelt[:-1]) == "how do i boil"  # the choice the model ranked higher, however spelt


def test_a_json_row_stays_json_whatever_the_model_prefers():
    tokenizer = build_tokenizer()
    vocab, stop = len(tokenizer), tokenizer.eos_token_id
    schema = '{"properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "type": "object", "additionalProperties": false}'
    params = SamplingParams(temperature=1.0, repetition_penalty=1.2, json_schema=schema, seed=0)
    sampler = BatchSampler(vocab, torch.device("cpu"), exempt={stop})
    sampler.add_row(params, [1], Grammars(tokenizer, vocab, {stop}).matcher(params))
    generator = torch.Generator().manual_seed(0)
    out = []
    while not out or out[-1] != stop:
        out.append(int(sampler.sample(torch.randn(1, vocab, generator=generator) * 5)[0]))
        assert len(out) < 40
    assert json.loads(tokenizer.decode(out[:-1]))["ok"] in (True, False)


def test_logprobs_are_the_penalised_tempered_distribution():
    logits = torch.zeros(1, 10)
    logits[0, OTHER], logits[0, FRESH] = 2.0, 1.0
    sampler = BatchSampler(10, torch.device("cpu"))
    sampler.add_row(SamplingParams(temperature=0.5, top_p=1.0, repetition_penalty=2.0, seed=1, logprobs=2), [OTHER])
    token = int(sampler.sample(logits.clone())[0])
    expected = torch.tensor([0.0] * 10)
    expected[OTHER], expected[FRESH] = 1.0, 1.0  # OTHER was seen: 2.0 / 2
    expected = (expected / 0.5).log_softmax(-1)
    lp = sampler.last_logprobs[0]
    assert lp.token == token and lp.logprob == pytest.approx(float(expected[token]))
    assert {t for t, _ in lp.top} == {OTHER, FRESH}
    assert [v for _, v in lp.top] == pytest.approx([float(expected[OTHER])] * 2)
