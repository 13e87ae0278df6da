"""Where the new EOT token starts: the base's own end of turn, then its output row fitted to the data."""

import pytest
import torch

from lima import chat_format
from training import chat_setup, eot_fit, recipe as recipes
from tests.helpers.tiny_model import build_model, build_tokenizer
from tests.helpers.training import QUESTIONS

# short exchanges in the tiny tokenizer's words: every answer end falls inside the fitted window
CONVERSATIONS = [[{"role": "user", "content": q}, {"role": "assistant", "content": f"first, the quick brown fox. "
                                                   f"then check the result {i}."},
                  {"role": "user", "content": "thanks, what then?"},
                  {"role": "assistant", "content": "then check the result again."}] for i, q in enumerate(QUESTIONS)]

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def instruct_pair():
    """A tiny 'instruct' base: ChatML template, its own <|im_end|>, EOS something else."""
    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({"extra_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    return build_model(tokenizer), tokenizer


def test_the_base_end_of_turn_is_found_in_its_template_else_eos():
    _, tokenizer = instruct_pair()
    assert chat_setup.own_end_token(tokenizer) == tokenizer.convert_tokens_to_ids("<|im_end|>")
    plain = build_tokenizer()  # a pretrained base: no template, EOS only
    assert chat_setup.own_end_token(plain) == plain.eos_token_id


@pytest.mark.parametrize("init", ["end-token", "fitted"])
def test_eot_rows_start_as_copies_of_the_end_token(init):
    model, tokenizer = instruct_pair()
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eot = chat_setup.setup(model, tokenizer, chat_format.EOT, init)
    assert eot != end and tokenizer.convert_ids_to_tokens(eot) == chat_format.EOT  # a distinct token
    inputs, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert torch.equal(inputs[eot], inputs[end]) and torch.equal(head[eot], head[end])  # untied: both rows


def test_mean_init_keeps_the_old_start_and_a_present_token_keeps_its_rows():
    model, tokenizer = instruct_pair()
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eot = chat_setup.setup(model, tokenizer, chat_format.EOT, "mean")
    assert not torch.equal(model.get_output_embeddings().weight[eot], model.get_output_embeddings().weight[end])
    before = model.get_output_embeddings().weight[eot].clone()
    assert chat_setup.setup(model, tokenizer, chat_format.EOT, "end-token") == eot  # a trained variant
    assert torch.equal(model.get_output_embeddings().weight[eot], before)
    with pytest.raises(ValueError, match="lima.eot_init must be one of"):
        chat_setup.setup(model, tokenizer, chat_format.EOT, "zero")


def end_probability(model, tokenizer, eot: int, conversations) -> float:
    """Mean P(EOT) right after each assistant turn."""
    values = []
    with torch.no_grad():
        for messages in conversations:
            for k, message in enumerate(messages):
                if message["role"] == "assistant":
                    text = tokenizer.apply_chat_template(messages[:k], add_generation_prompt=True, tokenize=False)
                    ids = tokenizer(text + message["content"], add_special_tokens=False).input_ids
                    values.append(model(torch.tensor([ids])).logits[0, -1].softmax(-1)[eot].item())
    return sum(values) / len(values)


def test_the_fit_makes_eot_likely_where_answers_end_and_touches_only_its_row():
    model, tokenizer = instruct_pair()
    conversations = CONVERSATIONS
    eot = chat_setup.setup(model, tokenizer, chat_format.EOT, "fitted")
    head = model.get_output_embeddings().weight
    others, inputs = head.detach().clone(), model.get_input_embeddings().weight.detach().clone()
    before = end_probability(model, tokenizer, eot, conversations)
    report = eot_fit.fit(model, tokenizer, eot, conversations, max_length=512, budget=4000)
    after = end_probability(model, tokenizer, eot, conversations)
    assert before < 0.1 and after > 0.5 and report["p_eot_after"] > 0.5
    # it ends answers, not every word
    assert report["answer_ends"] == 2 * len(CONVERSATIONS) and report["false_ends"] < 0.05
    changed = (head.detach() != others).any(dim=1).nonzero().flatten().tolist()
    assert changed == [eot] and torch.equal(model.get_input_embeddings().weight, inputs)  # the output row only


def test_prepare_fits_a_new_token_on_the_run_data_and_says_what_it_did():
    model, tokenizer = instruct_pair()
    recipe = recipes.load("cpu-demo", ["lima.eot_fit_tokens=200"])
    eot, refit = chat_setup.prepare(model, tokenizer, recipe.lima, CONVERSATIONS, 512)
    [report] = refit.reports  # the first fit; the callback fits again at each epoch's end
    assert report["step"] == 0 and 0 < report["tokens"] <= 200  # the budget holds
    assert report["answer_ends"] < 2 * len(CONVERSATIONS)
    assert report["p_eot_after"] > report["p_eot_before"]
    again, nothing = chat_setup.prepare(model, tokenizer, recipe.lima, CONVERSATIONS, 512)  # already there
    assert again == eot and nothing is None
