"""The real embedded SmolLM2-135M-Instruct: prepared from PyPI once, served, chatted with."""

import openai
import pytest

from lima import embedded_model as em
from tests.helpers.server import serving

pytestmark = pytest.mark.slow


def test_prepared_folder_is_a_plain_safetensors_model(embedded_model):
    assert em.is_prepared(embedded_model)
    assert not list(embedded_model.glob("*.gguf"))
    assert em.prepare(embedded_model) == embedded_model  # second call reuses the folder


def test_serves_the_embedded_model_through_the_openai_client(embedded_model, tmp_path):
    with serving(["--no-registry", "--model", f"base={embedded_model}"], tmp_path / "serve.log") as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
            # without the paper's 1.2 repetition penalty: on a 135M model it pushes a greedy
            # one-word answer into rambling, and this test is about serving, not sampling
            max_tokens=64, temperature=0, extra_body={"repetition_penalty": 1.0})
        assert reply.choices[0].finish_reason == "stop"  # ended on the model's own end-of-turn token
        assert "Paris" in reply.choices[0].message.content
        pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=16, stream=True)
            if c.choices]
        assert "".join(pieces).strip()
