"""The official openai client against the service: in process for the protocol, and one real
process on a free port for what needs a real server (health answering while a stream runs)."""

import httpx
import openai
import pytest


@pytest.fixture
def client(api):
    return openai.OpenAI(base_url="http://service/v1", api_key="unused", max_retries=0, http_client=api)


def test_lists_models_with_context_length(client):
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"base", "short"}
    assert models["short"].model_extra["max_model_len"] == 64


def test_non_streaming_returns_text_and_usage(client):
    reply = client.chat.completions.create(model="base", messages=[{"role": "user", "content": "hello"}],
                                           max_tokens=12, temperature=0)
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0
    assert 0 < reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streaming_matches_non_streaming_when_greedy(client):
    messages = [{"role": "user", "content": "how do i boil an egg?"}]
    whole = client.chat.completions.create(model="base", messages=messages, max_tokens=20, temperature=0)
    stream = client.chat.completions.create(model="base", messages=messages, max_tokens=20, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_sampling_overrides_are_honoured(client):
    messages = [{"role": "user", "content": "the quick brown fox"}]
    seeded = [client.chat.completions.create(model="base", messages=messages, max_tokens=15, temperature=1.5,
                                             top_p=1.0, seed=7, extra_body={"repetition_penalty": 1.0})
              for _ in range(2)]
    assert seeded[0].choices[0].message.content == seeded[1].choices[0].message.content
    stopped = client.chat.completions.create(model="base", messages=messages, max_tokens=30, temperature=0)
    text = stopped.choices[0].message.content
    assert len(text) > 4
    stop = text[2:4]
    cut = client.chat.completions.create(model="base", messages=messages, max_tokens=30, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_a_guided_choice_reply_is_exactly_one_of_the_choices(client):
    """vLLM's `guided_choice`, which a judge uses to answer a label even when it is a small model."""
    choices = ["Fail", "Pass", "Excellent", "Neither of them"]
    for question in ("Rate this reply.", "the quick brown fox", "Which is better, A or B?"):
        reply = client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": question}], temperature=0, max_tokens=64,
            extra_body={"guided_choice": choices})
        assert reply.choices[0].message.content in choices
        assert reply.choices[0].finish_reason == "stop"


def test_health_answers_while_a_long_stream_runs(service):
    client = openai.OpenAI(base_url=service + "/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(model="base", messages=[{"role": "user", "content": "go"}],
                                            max_tokens=400, temperature=0.7, stream=True,
                                            extra_body={"ignore_eos": True})  # a long stream, always
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    health = httpx.get(service + "/health", timeout=5)  # the event loop is not busy generating
    assert health.json()["status"] == "ok"
    assert sum(1 for _ in stream) > 1
