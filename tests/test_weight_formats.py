"""The CPU weight formats: float16 or int8 weights, float32 products (and bfloat16 pairs for prompts
when asked: ``set_prompt_products``), for every batch size and shape."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from service.engines import weight_formats


@pytest.fixture(scope="module", autouse=True)
def kernel():
    problem = weight_formats.load()
    assert problem is None, problem  # a C++ compiler is part of the test setup, as for torch.compile


PROMPT = 33  # input rows from which the kernel takes the prompt path (linear_kernel.cpp, kGemmRows + 1)


@pytest.fixture(params=["float32", "bfloat16"])
def prompts(request):
    """How prompts multiply, set for one test (``weight_formats.set_prompt_products``)."""
    weight_formats.set_prompt_products(request.param)
    yield request.param
    weight_formats.set_prompt_products("float32")


def expected_products(x: torch.Tensor, packed) -> torch.Tensor:
    """What the kernel computes: float32 products of the inputs and the stored weights, or for a
    prompt where the CPU multiplies bfloat16 pairs, both rounded to bfloat16 first (int8 weights
    are exact in bfloat16, their scale multiplies the sums)."""
    if len(x) < PROMPT or weight_formats.prompt_products() == "float32":
        return F.linear(x, weight_formats.unpack(packed))
    stored = packed.blocks.float().transpose(1, 2).reshape(-1, x.shape[1])[:packed.out_features]
    sums = F.linear(x.bfloat16().float(), stored.bfloat16().float())
    return sums if packed.scale is None else sums * packed.scale[:packed.out_features]


@pytest.mark.parametrize("fmt", ["fp16", "int8"])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6, 7, 8, 13, 32, 33, 300])  # tiles, remainders, the prompt path
@pytest.mark.parametrize("k, n", [(64, 96), (72, 7), (576, 960), (577, 40)])  # K not a multiple of 16 (odd); N of the tile
def test_matches_float_arithmetic_on_the_stored_weights(fmt, rows, k, n, prompts):
    torch.manual_seed(rows + k + n)
    x, weight = torch.randn(rows, k), torch.randn(n, k) * 0.05
    packed = weight_formats.pack(weight, fmt)
    expected = expected_products(x, packed)
    if fmt == "fp16":  # the blocked layout holds exactly the float16 weights, in order
        assert torch.equal(weight_formats.unpack(packed), weight.half().float())
    got = weight_formats.linear(x, packed)
    assert got.shape == expected.shape and got.dtype == torch.float32
    # float32 sums in another order: 1e-5 apart; bfloat16 rounding left out or done wrong: about 1e-2
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5), (got - expected).abs().max()


def test_prompts_take_bfloat16_only_when_asked_and_stay_within_its_precision(prompts):
    """float32 products unless bfloat16 pairs are asked for; then a prompt's outputs differ from
    float32 products by bfloat16's rounding and no more (about 2^-8 of their size), never by an
    error in the layout. torch's own float32 matmul precision stays as it is."""
    assert torch.backends.mkldnn.matmul.fp32_precision in ("none", "ieee")
    if prompts == "float32":
        assert weight_formats.prompt_products() == "float32"
    elif weight_formats.prompt_products() == "float32":
        pytest.skip("this CPU has no bfloat16 pairs (AVX512-BF16)")
    torch.manual_seed(0)
    packed = weight_formats.pack(torch.randn(960, 576) * 0.05, "fp16")
    x = torch.randn(300, 576)
    exact, got = F.linear(x, weight_formats.unpack(packed)), weight_formats.linear(x, packed)
    relative = float((got - exact).norm() / exact.norm())
    assert (relative < 1e-5) if prompts == "float32" else (1e-4 < relative < 1e-2), relative


def test_int8_rounds_each_row_to_127_steps_of_its_own_scale():
    weight = torch.tensor([[0.5, -1.0, 0.25], [100.0, 3.0, -50.0], [0.0, 0.0, 0.0]])
    q, scale = weight_formats.quantize_int8(weight)
    assert q.dtype == torch.int8 and q.abs().max() == 127
    assert torch.allclose(scale[:2], torch.tensor([1.0 / 127, 100.0 / 127]))
    assert q[2].abs().sum() == 0  # an all-zero row stays zero, no division by zero
    assert (q.float() * scale.unsqueeze(1) - weight).abs().max() <= scale.max() / 2 + 1e-6


@pytest.mark.parametrize("fmt", ["fp16", "int8"])
@pytest.mark.parametrize("rows", [7, 32])  # decode batches, up to the largest
def test_batch_rows_are_computed_independently(fmt, rows, prompts):
    """A row's result does not depend on the other rows of the batch (continuous batching mixes
    requests; each reply must be what it would be alone)."""
    torch.manual_seed(rows)
    packed = weight_formats.pack(torch.randn(200, 576), fmt)  # the embedded model's width
    x = torch.randn(rows, 576)
    alone = torch.cat([weight_formats.linear(x[i:i + 1], packed) for i in range(rows)])
    assert torch.equal(weight_formats.linear(x, packed), alone)


@pytest.mark.parametrize("fmt", ["fp16", "int8"])
def test_prompt_rows_are_computed_independently(fmt, prompts):
    """A prompt's row does not depend on the rows after it, to the bit: a token's keys and values
    are the same in any prompt that starts with the same tokens."""
    torch.manual_seed(1)
    packed = weight_formats.pack(torch.randn(200, 576), fmt)
    x = torch.randn(300, 576)
    whole = weight_formats.linear(x, packed)
    for rows in (PROMPT, 100, 299):
        assert torch.equal(weight_formats.linear(x[:rows], packed), whole[:rows]), rows


@pytest.mark.parametrize("fmt, tolerance", [("fp16", 1e-3), ("int8", 0.02)])
def test_packed_linear_replaces_every_linear_and_keeps_the_bias(fmt, tolerance):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(48, 5)))
    x = torch.randn(3, 32)
    expected = model(x)
    weight_formats.pack_linears(model, fmt)
    assert isinstance(model[0], weight_formats.PackedLinear) and isinstance(model[2][0], weight_formats.PackedLinear)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert torch.allclose(model(x), expected, atol=tolerance)


@pytest.mark.parametrize("fmt", ["fp16", "int8"])
def test_compiled_graphs_call_the_kernel(fmt):
    torch.manual_seed(0)
    packed = weight_formats.pack(torch.randn(64, 32), fmt)
    x = torch.randn(2, 32)
    compiled = torch.compile(lambda x, w: torch.relu(weight_formats.linear(x, w)), fullgraph=True)
    assert torch.equal(compiled(x, packed), torch.relu(weight_formats.linear(x, packed)))


def test_an_unknown_format_is_named():
    with pytest.raises(ValueError, match="unknown weight format 'int4': choose one of fp16, int8, none"):
        weight_formats.pack(torch.zeros(2, 2), "int4")


def test_without_a_cpp_compiler_the_service_falls_back_to_float32_and_says_why(tmp_path):
    script = """
import logging
logging.basicConfig(level=logging.WARNING)
from service.engines.transformers_engine import weight_format
print("format", weight_format("fp16", "base"))
"""
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "LIMA_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "format none" in result.stdout
    assert "model 'base' is served with float32 weights" in result.stderr
    assert "could not be built" in result.stderr


def test_the_service_multiplies_prompts_in_bfloat16_only_when_asked(tiny_base, tmp_path):
    """`lima serve --prompt-products bfloat16` reaches the kernel: a long prompt's first-token log
    probabilities move by bfloat16's rounding; the default keeps float32 products."""
    import openai

    from tests.helpers.server import serving

    try:
        if weight_formats.set_prompt_products("bfloat16") == "float32":
            pytest.skip("this CPU has no bfloat16 pairs (AVX512-BF16)")
    finally:
        weight_formats.set_prompt_products("float32")
    messages = [{"role": "user", "content": " ".join(f"word{i}" for i in range(80))}]  # well over 32 tokens
    found = {}
    for kind in ("float32", "bfloat16", None):
        flags = ["--prompt-products", kind] if kind else []
        with serving(["--no-registry", "--model", f"base={tiny_base}", *flags], tmp_path / f"{kind}.log") as base:
            reply = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0).chat.completions.create(
                model="base", messages=messages, max_tokens=1, temperature=0, logprobs=True, top_logprobs=5)
            found[kind] = [(t.token, t.logprob) for t in reply.choices[0].logprobs.content[0].top_logprobs]
    assert found[None] == found["float32"]  # the default is float32 products
    exact, rounded = dict(found["float32"]), dict(found["bfloat16"])
    moved = [abs(exact[t] - rounded[t]) for t in exact.keys() & rounded.keys()]
    assert moved and 0 < max(moved) < 0.1, (found["float32"], found["bfloat16"])
    assert "prompts multiply in bfloat16 pairs" in (tmp_path / "bfloat16.log").read_text()


def test_bfloat16_prompts_are_refused_where_the_kernel_does_not_multiply():
    """float32 weights (and a GPU) do not go through the kernel: asking for bfloat16 prompts there
    is a clear error, not a setting that silently does nothing."""
    from service.engines.transformers_engine import TransformersEngine

    with pytest.raises(ValueError, match="--prompt-products bfloat16 is for the CPU's fp16 and int8 weights"):
        TransformersEngine(device="cpu", quantize="none", prompt_products="bfloat16")
