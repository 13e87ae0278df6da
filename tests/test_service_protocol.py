"""The OpenAI protocol as other clients speak it, through the official openai client against the
service in process (a real transformers engine, the tiny model): content parts, the developer
role, log probabilities, JSON replies, one model's card, text completions, tools refused."""

import json
import math

import openai
import pytest

SAY = [{"role": "user", "content": "how do i boil an egg?"}]
GREEDY = {"temperature": 0, "max_tokens": 12}


@pytest.fixture
def client(api):
    return openai.OpenAI(base_url="http://service/v1", api_key="unused", max_retries=0, http_client=api)


def reply(client, messages, **kwargs):
    return client.chat.completions.create(model="base", messages=messages, **{**GREEDY, **kwargs})


def streamed(stream):
    """(text, the chunks' log probabilities in order, finish reason) of a streamed chat reply."""
    text, logprobs, finish = "", [], None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            if chunk.choices[0].logprobs:
                logprobs += chunk.choices[0].logprobs.content
            finish = chunk.choices[0].finish_reason or finish
    return text, logprobs, finish


def test_text_parts_are_joined_and_answered_as_the_same_string(client):
    plain = reply(client, [{"role": "user", "content": "how do i boil\nan egg?"}])
    parts = reply(client, [{"role": "user", "content": [{"type": "text", "text": "how do i boil"},
                                                        {"type": "text", "text": "an egg?"}]}])
    assert parts.choices[0].message.content == plain.choices[0].message.content
    assert parts.usage.prompt_tokens == plain.usage.prompt_tokens


def test_the_developer_role_is_a_system_message(client):
    system = reply(client, [{"role": "system", "content": "be brief"}, *SAY])
    developer = reply(client, [{"role": "developer", "content": "be brief"}, *SAY])
    assert developer.choices[0].message.content == system.choices[0].message.content
    assert developer.usage.prompt_tokens == system.usage.prompt_tokens


def test_an_image_part_is_refused_naming_the_part(client):
    with pytest.raises(openai.BadRequestError) as refused:
        reply(client, [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    message = refused.value.body["message"]
    assert "messages[0].content" in message and "content[1]" in message and "image_url" in message
    assert "text only" in message


def test_logprobs_are_the_samplers_own_and_the_same_streamed(client):
    whole = reply(client, SAY, logprobs=True, top_logprobs=3, extra_body={"repetition_penalty": 1.0})
    content = whole.choices[0].logprobs.content
    assert len(content) == whole.usage.completion_tokens - (whole.choices[0].finish_reason == "stop")
    # a token may hold part of a character: the bytes, joined, are the reply (the random tiny model
    # writes bytes that are no UTF-8 at all, which decoders may replace one or several at a time)
    joined = b"".join(bytes(t.bytes) for t in content).decode(errors="replace")
    assert joined.replace("\ufffd", "") == whole.choices[0].message.content.replace("\ufffd", "")
    for token in content:
        assert len(token.top_logprobs) == 3
        # greedy: the chosen token is the likeliest, and the alternatives come best first
        assert token.logprob == pytest.approx(token.top_logprobs[0].logprob)
        assert [t.logprob for t in token.top_logprobs] == sorted((t.logprob for t in token.top_logprobs), reverse=True)
        assert token.logprob <= 0
    text, chunks, _ = streamed(client.chat.completions.create(
        model="base", messages=SAY, stream=True, logprobs=True, top_logprobs=3, extra_body={"repetition_penalty": 1.0},
        **GREEDY))
    assert text == whole.choices[0].message.content
    assert [(t.token, round(t.logprob, 4)) for t in chunks] == [(t.token, round(t.logprob, 4)) for t in content]


def test_logprobs_follow_the_temperature_and_are_absent_when_not_asked(client):
    cold = reply(client, SAY, logprobs=True, top_logprobs=5, temperature=0.5, seed=1, max_tokens=1)
    token = cold.choices[0].logprobs.content[0]
    # at temperature 0.5 the distribution is sharper than the model's own: the top five hold more mass
    hot = reply(client, SAY, logprobs=True, top_logprobs=5, temperature=2.0, seed=1, max_tokens=1)
    mass = lambda t: sum(math.exp(a.logprob) for a in t.top_logprobs)  # noqa: E731
    assert mass(token) > mass(hot.choices[0].logprobs.content[0])
    assert reply(client, SAY).choices[0].logprobs is None


def test_a_guided_choice_gives_the_labels_probabilities(client):
    labels = ["Fail", "Pass", "Excellent"]
    answer = reply(client, [{"role": "user", "content": "Rate this reply."}], logprobs=True, top_logprobs=20,
                   extra_body={"guided_choice": labels, "repetition_penalty": 1.0})
    first = answer.choices[0].logprobs.content[0]
    allowed = [t for t in first.top_logprobs if t.logprob > -9999]
    # the mask leaves only tokens that begin a label; their probabilities sum to one
    assert allowed and all(any(label.startswith(t.token) for label in labels) for t in allowed)
    assert sum(math.exp(t.logprob) for t in allowed) == pytest.approx(1.0, abs=1e-4)
    assert answer.choices[0].message.content in labels


VERDICT = {"type": "object", "additionalProperties": False, "required": ["verdict", "sure"],
           "properties": {"verdict": {"enum": ["Fail", "Pass", "Excellent"]}, "sure": {"type": "boolean"}}}


@pytest.mark.parametrize("stream", [False, True])
def test_a_json_schema_reply_is_json_that_follows_it(client, stream):
    fmt = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT}}
    for question in ("Rate this reply.", "the quick brown fox"):
        kwargs = dict(model="base", messages=[{"role": "user", "content": question}], max_tokens=40,
                      response_format=fmt, temperature=0.7, seed=3)
        if stream:
            text, _, finish = streamed(client.chat.completions.create(stream=True, **kwargs))
        else:
            answer = client.chat.completions.create(**kwargs)
            text, finish = answer.choices[0].message.content, answer.choices[0].finish_reason
        value = json.loads(text)
        assert set(value) == {"verdict", "sure"}, text
        assert value["verdict"] in ("Fail", "Pass", "Excellent") and isinstance(value["sure"], bool)
        assert finish == "stop"


def test_json_object_keeps_the_reply_inside_an_object(client):
    text = reply(client, SAY, response_format={"type": "json_object"}, max_tokens=30).choices[0].message.content
    assert text.startswith("{")
    plain = reply(client, SAY, max_tokens=30).choices[0].message.content
    assert not plain.startswith("{")  # the tiny model left alone says something else


def test_a_schema_the_grammar_cannot_enforce_is_refused_naming_it(client):
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(?=x)y"}}}
    with pytest.raises(openai.BadRequestError) as refused:
        reply(client, SAY, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert refused.value.body["param"] == "response_format.json_schema.schema"
    assert "look-around" in refused.value.body["message"]


def test_one_model_by_id_and_an_unknown_one_in_openais_error_shape(client, api):
    model = client.models.retrieve("short")
    assert model.id == "short" and model.model_extra["max_model_len"] == 64
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-9")
    assert missing.value.body["code"] == "model_not_found" and "base" in missing.value.body["message"]
    assert set(api.get("/v1/models/gpt-9").json()) == {"error"}


def test_text_completions_continue_the_prompt_streaming_or_not(client):
    prompt = "the quick brown fox"
    whole = client.completions.create(model="base", prompt=prompt, max_tokens=10, temperature=0, logprobs=2,
                                      extra_body={"repetition_penalty": 1.0})
    choice = whole.choices[0]
    assert choice.text and choice.finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens <= 10
    assert whole.usage.prompt_tokens < reply(client, [{"role": "user", "content": prompt}]).usage.prompt_tokens
    assert len(choice.logprobs.tokens) == whole.usage.completion_tokens - (choice.finish_reason == "stop")
    for token, logprob, top in zip(choice.logprobs.tokens, choice.logprobs.token_logprobs,
                                   choice.logprobs.top_logprobs):
        # greedy: the chosen token is the likeliest (two alternatives may print alike and share a key)
        assert 1 <= len(top) <= 2 and top[token] == pytest.approx(logprob) == max(top.values())
    assert choice.logprobs.text_offset[0] == 0
    pieces, finish = "", None
    for chunk in client.completions.create(model="base", prompt=prompt, max_tokens=10, temperature=0, stream=True,
                                           extra_body={"repetition_penalty": 1.0}):
        if chunk.choices:
            pieces += chunk.choices[0].text
            finish = chunk.choices[0].finish_reason or finish
    assert pieces == choice.text and finish == choice.finish_reason
    stopped = client.completions.create(model="base", prompt=prompt, max_tokens=10, temperature=0,
                                        stop=[choice.text[1:3]], extra_body={"repetition_penalty": 1.0})
    assert stopped.choices[0].text == choice.text[: choice.text.index(choice.text[1:3])]


def test_tools_are_refused_unless_none_is_chosen(client):
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as refused:
        reply(client, SAY, tools=[tool])
    assert "do not call tools" in refused.value.body["message"]
    assert reply(client, SAY, tools=[tool], tool_choice="none").choices[0].message.content is not None
