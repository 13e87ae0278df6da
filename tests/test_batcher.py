"""The continuous batcher in-process: stop tokens, cancellation, generate-equivalence, weight formats.

Every batcher is given a runner: transformers' forward, or the lean decoder (fast_llama)."""

import threading
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from service.engines.batcher import ComputeThread, ForwardRunner, Sequence
from service.engines.fast_llama import FastLlama
from service.engines.weight_formats import PackedLinear
from service.engines.transformers_engine import load_runner
from service.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0, repetition_penalty=1.0)


@pytest.fixture(scope="module")
def tiny(tiny_base):
    return AutoModelForCausalLM.from_pretrained(tiny_base).eval(), AutoTokenizer.from_pretrained(tiny_base)


@pytest.fixture
def compute():
    thread = ComputeThread("test")
    yield thread
    thread.close()


def run(batcher, prompt_ids, params=GREEDY, max_new=20):
    done, deltas = threading.Event(), []

    def emit(delta):
        deltas.append(delta)
        if delta.finish_reason:
            done.set()

    seq = Sequence(prompt_ids, params, max_new, emit)
    batcher.submit(seq)
    assert done.wait(60)
    return deltas, seq


@pytest.mark.parametrize("decoder", ["forward", "lean"])
def test_greedy_output_equals_model_generate(tiny, compute, decoder):
    model, tok = tiny
    prompt = tok("the quick brown fox").input_ids
    expected = model.generate(torch.tensor([prompt]), max_new_tokens=15, do_sample=False, min_new_tokens=15)
    runner = ForwardRunner(model) if decoder == "forward" else FastLlama(model, quantize="none", compile=False)
    batcher = compute.serve(runner, tok, eos_ids=set(), name="t")
    try:
        deltas, seq = run(batcher, prompt, max_new=15)
    finally:
        batcher.stop()
    assert seq.output_ids == expected[0, len(prompt):].tolist()
    assert deltas[-1].finish_reason == "length" and deltas[-1].completion_tokens == 15


def test_end_of_turn_token_stops_and_is_not_shown(tiny, compute):
    model, tok = tiny
    prompt = tok("hello").input_ids
    first = int(model.generate(torch.tensor([prompt]), max_new_tokens=1, do_sample=False)[0, -1])
    batcher = compute.serve(ForwardRunner(model), tok, eos_ids={first}, name="t")
    try:
        deltas, seq = run(batcher, prompt)
    finally:
        batcher.stop()
    assert seq.output_ids == []
    assert deltas[-1].finish_reason == "stop"
    assert "".join(d.text for d in deltas) == ""
    assert deltas[-1].completion_tokens == 1  # the end-of-turn token counts as generated


def test_cancelled_sequence_leaves_the_batch(tiny, compute):
    model, tok = tiny
    batcher = compute.serve(ForwardRunner(model), tok, eos_ids=set(), name="t")
    try:
        started = threading.Event()
        seq = Sequence(tok("go").input_ids, GREEDY, 100_000, lambda d: started.set())
        batcher.submit(seq)
        assert started.wait(30)
        seq.cancelled = True
        deltas, _ = run(batcher, tok("hello").input_ids, max_new=5)  # still served after the cancel
        assert deltas[-1].finish_reason == "length"
        for _ in range(200):  # the loop retires rows right after emitting their last token
            if batcher.active_rows == 0:
                break
            time.sleep(0.01)
        assert batcher.active_rows == 0  # the 100,000-token request is gone, not still decoding
    finally:
        batcher.stop()


def test_int8_forward_path_generates(tiny_base, compute):
    runner, tok, _, _ = compute.call(load_runner, "base", str(tiny_base), "cpu", torch.float32, "int8",
                                     "forward").result()
    down = runner.model.model.layers[0].mlp.down_proj
    assert isinstance(down, PackedLinear) and down.packed.blocks.dtype == torch.int8
    batcher = compute.serve(runner, tok, eos_ids=set(), name="q")
    try:
        deltas, seq = run(batcher, tok("hello").input_ids, params=SamplingParams(), max_new=8)
    finally:
        batcher.stop()
    assert len(seq.output_ids) == 8


def test_unloading_fails_waiting_requests_with_a_reason(tiny, compute):
    model, tok = tiny
    batcher = compute.serve(ForwardRunner(model), tok, eos_ids=set(), name="t")
    got = []
    seq = Sequence(tok("go").input_ids, GREEDY, 100_000, got.append)
    batcher.submit(seq)
    batcher.stop()
    assert got[-1].finish_reason == "error" and "unloaded" in got[-1].text
    with pytest.raises(RuntimeError, match="unloaded"):
        batcher.submit(seq)


def test_two_models_share_the_compute_thread(tiny, tiny_base, compute):
    model, tok = tiny
    other = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    first = compute.serve(ForwardRunner(model), tok, set(), name="a")
    second = compute.serve(ForwardRunner(other), tok, set(), name="b")
    results = {}
    threads = [threading.Thread(target=lambda b=b, k=k: results.__setitem__(k, run(b, tok("hello").input_ids)))
               for k, b in (("a", first), ("b", second))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert results["a"][1].output_ids == results["b"][1].output_ids  # same weights, same greedy answer
    first.stop(drain=True)
    assert compute.batchers == [second]


def test_cpu_default_is_the_compiled_fp16_lean_decoder(tiny_base, compute):
    from service.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(device="cpu")
    engine.compute.close()
    assert engine.quantize == "fp16"
    runner, tok, stops, context = compute.call(load_runner, "base", str(tiny_base), "cpu", torch.float32,
                                               "fp16", "lean").result()
    assert isinstance(runner, FastLlama) and runner.compiled  # compiling worked here, no eager fallback
    assert runner.weights["head"].blocks.dtype == torch.float16
    batcher = compute.serve(runner, tok, stops, name="q")
    try:
        deltas, seq = run(batcher, tok("hello").input_ids, params=SamplingParams(), max_new=8)
    finally:
        batcher.stop()
    assert len(seq.output_ids) == 8 and deltas[-1].finish_reason == "length"
