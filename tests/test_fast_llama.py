"""The lean CPU decoder against transformers' own forward, on a tiny Llama built in the test."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from torch._dynamo.utils import counters

from service.engines import fast_llama, weight_formats, kv_cache
from service.engines.batcher import ComputeThread, Sequence
from service.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0, repetition_penalty=1.0)


@pytest.fixture(scope="module")
def tiny(tiny_base):
    return AutoModelForCausalLM.from_pretrained(tiny_base).eval(), AutoTokenizer.from_pretrained(tiny_base)


def lean_logits(decoder, prompt: list[int], continuation: list[int]) -> list[torch.Tensor]:
    """Logits after the prompt and after each continuation token, through prefill + decode."""
    cache = kv_cache.new_cache(len(decoder.weights["layers"]))
    out = [decoder.prefill(torch.tensor([prompt]), cache)]
    mask = torch.ones(1, len(prompt), dtype=torch.long)
    for i, token in enumerate(continuation):
        mask = torch.cat([mask, torch.ones(1, 1, dtype=torch.long)], dim=1)
        out.append(decoder.decode(torch.tensor([[token]]), mask, torch.tensor([len(prompt) + i]), cache))
    return out


@pytest.mark.parametrize("compiled", [False, True])
@torch.inference_mode()
def test_float_weights_give_transformers_logits(tiny, compiled):
    model, tok = tiny
    prompt, continuation = tok("the quick brown fox").input_ids, tok(" jumps over the lazy dog").input_ids
    decoder = fast_llama.FastLlama(model, quantize="none", compile=compiled)
    decoder.warm_up()
    assert decoder.compiled == compiled
    full = model(torch.tensor([prompt + continuation])).logits[0]
    # 70 decode steps cross the cache's first growth (64 columns) and the compiled graph must follow
    ours = lean_logits(decoder, prompt, continuation + list(range(4, 70)))
    expected = model(torch.tensor([prompt + continuation + list(range(4, 70))])).logits[0, len(prompt) - 1:]
    assert torch.allclose(full[len(prompt) - 1:], expected[: len(continuation) + 1], atol=1e-5)
    got = torch.cat(ours)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()


@pytest.mark.parametrize("length", [63, 64, 200])  # shorter than the cache's first capacity, equal, longer
@torch.inference_mode()
def test_a_long_prompt_gives_transformers_logits(tiny, length):
    """A prompt attends causally without a mask at any length, whatever the cache holds beyond it."""
    model, _ = tiny
    prompt = [(7 * i) % 300 + 4 for i in range(length)]
    decoder = fast_llama.FastLlama(model, quantize="none", compile=False)
    expected = model(torch.tensor([prompt])).logits[0]
    assert torch.allclose(decoder.logits(prompt), expected, atol=1e-4)
    ours = lean_logits(decoder, prompt, [5, 6])
    expected = model(torch.tensor([prompt + [5, 6]])).logits[0, length - 1:]
    assert torch.allclose(torch.cat(ours), expected, atol=1e-4), (torch.cat(ours) - expected).abs().max()


@pytest.mark.parametrize("fmt, share", [("fp16", 0.001), ("int8", 0.01)])
@torch.inference_mode()
def test_compact_weights_keep_the_logits_close(tiny, fmt, share):
    """Weights rounded (to float16 or to int8 with a scale per row), activations not: logits within
    ``share`` of the float model's spread, through decode and through the all-positions path."""
    model, tok = tiny
    prompt = tok("how do i boil an egg?").input_ids
    decoder = fast_llama.FastLlama(model, quantize=fmt, compile=False)
    gate_up = decoder.weights["layers"][0]["gate_up"]
    assert gate_up.blocks.dtype == {"fp16": torch.float16, "int8": torch.int8}[fmt]
    assert weight_formats.unpack(gate_up).shape == (2 * model.config.intermediate_size, model.config.hidden_size)
    expected = model(torch.tensor([prompt])).logits[0]
    spread = float(expected.max() - expected.min())
    assert (lean_logits(decoder, prompt, [])[0][0] - expected[-1]).abs().max() < share * spread
    assert (decoder.logits(prompt) - expected).abs().max() < share * spread


@pytest.mark.parametrize("tied", [False, True])
@torch.inference_mode()
def test_a_checkpoint_read_tensor_by_tensor_gives_the_loaded_models_decoder(tiny_base, tmp_path, tied):
    """The service builds the decoder from the checkpoint file, one tensor at a time, on an empty
    skeleton of the model: the same weights, so the same logits in every format, as from the
    loaded model. A tied model looks its embedding up in the packed output layer."""
    from lima.model_files import Checkpoint
    from service.engines.transformers_engine import load_model

    folder = tiny_base
    if tied:
        model = AutoModelForCausalLM.from_pretrained(tiny_base)
        model.config.tie_word_embeddings = True
        model = AutoModelForCausalLM.from_config(model.config)  # tied at init
        folder = tmp_path / "tied"
        model.save_pretrained(folder)
        AutoTokenizer.from_pretrained(tiny_base).save_pretrained(folder)
    model, tok = load_model("m", str(folder), "cpu", torch.float32)
    skeleton, _ = load_model("m", str(folder), "cpu", torch.float32, weights=False)
    assert skeleton.model.embed_tokens.weight.is_meta
    prompt = tok("the quick brown fox").input_ids
    for fmt in ("none", "fp16", "int8"):
        checkpoint = Checkpoint.of(folder)
        from_file = fast_llama.FastLlama(skeleton, quantize=fmt, compile=False, tensors=checkpoint)
        checkpoint.close()
        loaded = fast_llama.FastLlama(model, quantize=fmt, compile=False)
        assert (from_file.weights["embed"] is from_file.weights["head"]) == (tied and fmt != "int8")
        assert torch.equal(from_file.logits(prompt), loaded.logits(prompt)), fmt
    expected = model(torch.tensor([prompt])).logits[0]
    assert torch.allclose(from_file.logits(prompt), expected, atol=0.01 * float(expected.max() - expected.min()))


def test_rows_joining_a_running_batch_each_get_generates_answer(tiny):
    """Continuous batching on the compiled decoder: three prompts of different lengths, submitted
    while the others decode (so rows are left-padded and the batch size changes), each equal to
    ``model.generate`` on its own. 70 tokens: the cache outgrows its first 64 columns."""
    model, tok = tiny
    prompts = [tok(text).input_ids for text in ("hello", "the quick brown fox jumps", "a list of steps: first")]
    with torch.inference_mode():
        expected = [model.generate(torch.tensor([p]), max_new_tokens=70, min_new_tokens=70, do_sample=False)[0, len(p):]
                    .tolist() for p in prompts]
    decoder = fast_llama.FastLlama(model, quantize="none")
    decoder.warm_up()
    compiled_before = dict(counters["stats"])
    compute = ComputeThread("lean-test")
    batcher = compute.serve(decoder, tok, eos_ids=set(), name="lean")
    try:
        done = [threading.Event() for _ in prompts]
        seqs = []
        for i, prompt in enumerate(prompts):
            seq = Sequence(prompt, GREEDY, 70, lambda d, i=i: d.finish_reason and done[i].set())
            seqs.append(seq)
            batcher.submit(seq)
            if i == 0:
                while len(seq.output_ids) < 3:  # the second joins a batch already decoding
                    threading.Event().wait(0.01)
        assert all(event.wait(120) for event in done)
    finally:
        batcher.stop()
        compute.close()
    assert [seq.output_ids for seq in seqs] == expected
    # warm-up compiled every graph serving needs: batch sizes 1 to 3, a cache that outgrows its
    # first buffer, no recompile
    assert decoder.compiled and dict(counters["stats"]) == compiled_before


def test_other_architectures_are_left_to_transformers(tiny):
    model, _ = tiny
    assert fast_llama.supports(model, "cpu") is None
    assert "CPU only" in fast_llama.supports(model, "cuda")
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    assert "gpt2" in fast_llama.supports(gpt2, "cpu")
    model.config.attention_bias = True
    try:
        assert "bias" in fast_llama.supports(model, "cpu")
    finally:
        model.config.attention_bias = False


def test_without_a_cpp_compiler_it_decodes_uncompiled(tiny_base, tmp_path):
    """A machine without g++: warm-up fails, the decoder says so and decodes eagerly, same logits."""
    script = f"""
import logging, sys, torch
logging.basicConfig(level=logging.WARNING)
from transformers import AutoModelForCausalLM
from service.engines import fast_llama
model = AutoModelForCausalLM.from_pretrained({str(tiny_base)!r}).eval()
decoder = fast_llama.FastLlama(model, quantize="none")
decoder.warm_up()
print("compiled", decoder.compiled)
"""
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "compiled False" in result.stdout
    assert "decoding without compilation" in result.stderr
