"""The served model is the trained model: on the real embedded SmolLM2, the CPU default gives
float32's perplexity and float32's greedy replies. A faster change that breaks answers fails here.

Tolerances, and why:
  - perplexity within 2% of float32's (the default measures +0.02%, the int8 option +0.3%; the
    old default, torch's dynamic int8, was +325%);
  - teacher-forced, the default changes no top token that float32 decides by ``fidelity.DECIDED``
    (0.01) or more; the int8 option changes some (so the measure would catch it as the default);
  - greedy replies through the real service equal float32's token for token, up to the first
    step where float32's own two best logits are within 0.01 of each other: there the model is
    undecided and any rounding may pick the other. float16 weights move logits by about 1e-3;
    the int8 option moves them by 1e-2 to 5e-2, and its replies part from float32's at steps
    whose margins are 0.03-0.06 on these prompts, so this test would catch it becoming the default.
"""

import openai
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dialogues import project
from service.engines import fidelity
from service.engines.fast_llama import FastLlama
from service.engines.transformers_engine import load_model, weight_format
from tests.helpers.server import serving

pytestmark = pytest.mark.slow

PROMPTS = ["Explain in two sentences why the sky is blue.", "Give me three tips for sleeping better.",
           "How do I boil an egg?", "Write a haiku about autumn."]
TOKENS = 48


@pytest.fixture(scope="module")
def float32(embedded_model):
    return AutoModelForCausalLM.from_pretrained(embedded_model).eval(), AutoTokenizer.from_pretrained(embedded_model)


@pytest.mark.parametrize("fmt", ["fp16", "int8"])
def test_perplexity_and_top_tokens_stay_with_float32(embedded_model, float32, fmt):
    model, tokenizer = float32
    texts = fidelity.token_ids(tokenizer, [c.as_openai() for c in project.chains()[:4]], max_tokens=512)
    with torch.inference_mode():
        reference = fidelity.teacher_forced(lambda ids: model(torch.tensor([ids])).logits[0], texts)
    # the served weights and kernels, through the prefill path (the compiled decode step is the
    # greedy test's business below)
    served_model, _ = load_model("base", str(embedded_model), "cpu", torch.float32)
    runner = FastLlama(served_model, quantize=weight_format(fmt, "base"), compile=False)
    served = fidelity.teacher_forced(runner.logits, texts, reference.tops)
    assert abs(served.perplexity / reference.perplexity - 1) < 0.02, (fmt, served, reference)
    if fmt == "fp16":
        assert served.decided_changed == 0, f"the default changes {served.decided_changed} decided top tokens"
    else:
        assert served.decided_changed > 0, "int8 changes decided top tokens; the measure no longer sees it"


@torch.inference_mode()
def float32_greedy(model, tokenizer, prompt: str) -> tuple[list[int], int]:
    """float32's greedy reply (token ids) and how many of its steps are decided (margin >= fidelity.DECIDED)."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        tokenize=True, return_dict=False)
    out = model.generate(torch.tensor([ids]), max_new_tokens=TOKENS, do_sample=False, repetition_penalty=1.0,
                         output_scores=True, return_dict_in_generate=True)
    reply = out.sequences[0, len(ids):].tolist()
    margins = [float(step[0].topk(2).values.diff().abs()) for step in out.scores]
    decided = next((i for i, m in enumerate(margins) if m < fidelity.DECIDED), len(margins))
    return reply, decided


def test_default_service_gives_float32s_greedy_replies(embedded_model, float32, tmp_path):
    model, tokenizer = float32
    with serving(["--no-registry", "--model", f"base={embedded_model}"], tmp_path / "serve.log") as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        for prompt in PROMPTS:
            expected, decided = float32_greedy(model, tokenizer, prompt)
            reply = client.chat.completions.create(
                model="base", messages=[{"role": "user", "content": prompt}], max_tokens=TOKENS, temperature=0,
                extra_body={"repetition_penalty": 1.0}).choices[0].message.content
            whole = tokenizer.decode(expected, skip_special_tokens=True)
            assert decided >= 16, f"{prompt!r}: float32 itself is undecided at step {decided}; pick another prompt"
            assert reply.startswith(tokenizer.decode(expected[:decided], skip_special_tokens=True)), (
                f"{prompt!r}: the default's greedy reply parts from float32's within its first {decided} "
                f"decided tokens:\n  float32: {whole!r}\n  served:  {reply!r}")
            if prompt == PROMPTS[0]:  # the reply a person would check by eye, whole
                assert reply == whole
