"""The EOT token, the chat template shared with serving, and loss on assistant tokens only."""

import asyncio

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from dialogues import project, training_sets
from lima import chat_format
from service.engines.transformers_engine import TransformersEngine
from service.sampling import SamplingParams
from training import chat_setup, recipe as recipes, sft
from tests.helpers.tiny_model import save_tiny_base
from tests.helpers.training import TINY

CHAIN = project.chains()[12]  # a three-exchange technical thread


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A tiny base set up for LIMA (EOT + template), a trainer on one chain, and the saved folder."""
    base = save_tiny_base(tmp_path_factory.mktemp("long-context-base"), context=8192)
    model = AutoModelForCausalLM.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    before = model.get_input_embeddings().weight.shape[0]
    eot_id = chat_setup.setup(model, tokenizer, chat_format.EOT)
    recipe = recipes.load("cpu-demo", [*TINY, "sft.max_length=4096"])
    dataset = training_sets.TrainingSet("dialogue", "project", [CHAIN])
    folder = tmp_path_factory.mktemp("prepared")
    trainer = sft.make_trainer(recipe, dataset, model, tokenizer, folder / "run", 10, eot_id, [])
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    return {"model": model, "tokenizer": tokenizer, "eot_id": eot_id, "trainer": trainer, "before": before,
            "folder": folder / "model"}


def test_eot_is_a_new_special_token_with_resized_embeddings(prepared):
    tok, model = prepared["tokenizer"], prepared["model"]
    assert prepared["eot_id"] >= prepared["before"]  # new, not a reused id
    assert tok.convert_ids_to_tokens(prepared["eot_id"]) == chat_format.EOT
    assert tok.eos_token == chat_format.EOT  # TRL's eos_token=... made it the stop token
    assert model.get_input_embeddings().weight.shape[0] % 64 == 0
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)
    assert chat_format.EOT in tok.decode(tok(chat_format.EOT, add_special_tokens=False).input_ids)
    assert tok(chat_format.EOT, add_special_tokens=False).input_ids == [prepared["eot_id"]]


def test_eot_ends_every_turn(prepared):
    text = prepared["tokenizer"].apply_chat_template(CHAIN.as_openai(), tokenize=False)
    turns = text.split(chat_format.EOT)
    assert len(turns) == len(CHAIN.messages) + 1
    for message, chunk in zip(CHAIN.messages, turns):
        assert chunk.endswith(message.content)


def test_only_assistant_tokens_carry_loss(prepared):
    batch = next(iter(prepared["trainer"].get_train_dataloader()))
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    tok = prepared["tokenizer"]
    trained = [i for i, label in zip(ids, labels) if label != -100]
    expected = "".join(m.content + chat_format.EOT for m in CHAIN.messages if m.role == "assistant")
    assert tok.decode(trained) == expected  # every assistant turn, each with its EOT, nothing else
    assert trained.count(prepared["eot_id"]) == CHAIN.user_turns


def test_training_and_serving_render_the_same_tokens(prepared):
    """The service's prompt for turn k is exactly the start of what training saw."""
    training_ids = prepared["trainer"].train_dataset[0]["input_ids"]

    async def serving_ids():
        engine = TransformersEngine(quantize="none")
        await engine.add_model("lima", str(prepared["folder"]))
        out = []
        for k in range(1, len(CHAIN.messages), 2):
            prepared_request = await engine.prepare("lima", CHAIN.as_openai()[:k], SamplingParams())
            out.append(prepared_request.payload["ids"])
        await engine.close()
        return out

    for prompt_ids in asyncio.run(serving_ids()):
        assert training_ids[: len(prompt_ids)] == prompt_ids
    saved = (prepared["folder"] / "chat_template.jinja").read_text()
    assert saved == chat_format.chat_template()


def _both_heads(trainer, bf16: bool, monkeypatch):
    """The loss, per-token outputs and gradients of one batch through the trainer's model (the CPU head
    ``make_trainer`` put in front) and through a copy with TRL's own fused head only, and how many
    times each called TRL's chunked kernel."""
    import copy

    import torch
    from trl.trainer import utils as trl_utils

    calls = []

    class Counted(trl_utils._ChunkedLogProbFunction):
        @classmethod
        def apply(cls, *args):
            calls[-1] += 1
            return super().apply(*args)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Counted)
    batch = next(iter(trainer.get_train_dataloader()))
    ours = trainer.model
    theirs = copy.deepcopy(ours)
    theirs.forward = type(theirs).forward.__get__(theirs)  # the model's own forward, then TRL's head on it
    trl_utils.add_fused_lm_head(theirs, outputs=("log_probs", "entropy", "is_top1"))
    found = []
    for model in (ours, theirs):
        calls.append(0)
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(**batch, fused_lm_head=True)
        out.loss.backward()
        found.append((out, [p.grad.clone() for p in model.parameters()]))
    return found, calls


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16-autocast"])
def test_the_cpu_head_gives_trls_loss_and_gradients(prepared, bf16, monkeypatch):
    """On a CPU the LM head is one GEMM over the labelled positions (``training/cpu_head.py``), not
    TRL's chunked head: the same loss, log-probabilities, metrics and gradients, to float32's rounding,
    or bf16's under autocast."""
    import torch

    ((ours, our_grads), (theirs, their_grads)), calls = _both_heads(prepared["trainer"], bf16, monkeypatch)
    assert calls == [0, 1]  # the trainer's model never went through TRL's chunked kernel; the copy did
    loss_tol, grad_tol = (1e-6, 1e-5) if not bf16 else (1e-3, 2e-2)
    assert ours.loss.item() == pytest.approx(theirs.loss.item(), rel=loss_tol)
    assert torch.equal(ours.label_mask, theirs.label_mask)
    assert ours.entropy.dtype == theirs.entropy.dtype == torch.float32
    assert torch.allclose(ours.log_probs, theirs.log_probs, atol=1e-5 if not bf16 else 2e-2)
    assert torch.allclose(ours.entropy, theirs.entropy, atol=1e-5 if not bf16 else 5e-2)
    agree = (ours.is_top1.bool() == theirs.is_top1.bool())[ours.label_mask].float().mean().item()
    assert agree == 1.0 if not bf16 else agree > 0.97
    for mine, trls in zip(our_grads, their_grads):
        assert (mine - trls).norm() <= grad_tol * trls.norm() + 1e-12


def test_the_cpu_head_leaves_a_batch_too_big_for_memory_to_trl(prepared, monkeypatch):
    import torch

    from training import cpu_head

    monkeypatch.setattr(cpu_head, "MAX_LOGITS", 1)  # every batch is "too big": TRL's chunked head scores it
    ((ours, our_grads), (theirs, their_grads)), calls = _both_heads(prepared["trainer"], False, monkeypatch)
    assert calls == [1, 1]
    assert ours.loss.item() == theirs.loss.item()
    assert all(torch.equal(a, b) for a, b in zip(our_grads, their_grads))
