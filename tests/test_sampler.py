"""The batched sampler: per-row settings, and the stop tokens exempt from the repetition penalty."""

import torch

from service.engines.sampler import BatchSampler
from service.sampling import SamplingParams

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
    """vLLM's guided_choice: at each step only tokens that continue a choice; the stop token once one is whole."""
    greedy = SamplingParams(temperature=0, repetition_penalty=1.0)
    sampler = BatchSampler(10, torch.device("cpu"), exempt={EOT})
    sampler.add_row(greedy, [1], choice_ids=[[OTHER, 1], [FRESH, 2, 4]])
    sampler.add_row(greedy, [1])  # an unguided row in the same batch keeps its own argmax
    favourite = torch.zeros(2, 10)
    favourite[:, 9] = 10.0  # the model's favourite token is in no choice
    favourite[:, FRESH], favourite[:, OTHER] = 2.0, 1.0
    assert sampler.sample(favourite.clone()).tolist() == [FRESH, 9]
    # FRESH's choice continues only with 2, however little the model likes it
    assert int(sampler.sample(favourite.clone(), rows=[0])[0]) == 2
    assert int(sampler.sample(favourite.clone(), rows=[0])[0]) == 4
    # the choice is whole: the only way on is the stop token
    assert int(sampler.sample(favourite.clone(), rows=[0])[0]) == EOT
