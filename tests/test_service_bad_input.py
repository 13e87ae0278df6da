"""Every bad request gets a 4xx OpenAI-style error that names the problem, and the service keeps
serving (in process: the app over a real engine and the tiny model)."""

import pytest


def post(api, body, path="/v1/chat/completions"):
    return api.post(path, json=body)


def user(text="hi"):
    return [{"role": "user", "content": text}]


def error_of(response):
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


def test_unknown_model_is_404_listing_known_models(api):
    r = post(api, {"model": "gpt-9", "messages": user()})
    assert r.status_code == 404
    err = error_of(r)
    assert err["code"] == "model_not_found"
    assert "gpt-9" in err["message"] and "base" in err["message"] and "short" in err["message"]


@pytest.mark.parametrize("body, fragment", [
    ({"model": "base", "messages": []}, "messages"),
    ({"model": "base"}, "messages: Field required"),
    ({"model": "base", "messages": "hello"}, "messages"),
    ({"model": "base", "messages": [{"role": "user"}]}, "messages[0].content: Field required"),
    ({"model": "base", "messages": [{"role": "user", "content": "   "}]}, "messages[0].content: content is empty"),
    ({"model": "base", "messages": [{"role": "user", "content": 42}]}, "messages[0].content: Input should be a valid string"),
    ({"model": "base", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
     "messages[0].content: content[0] is a 'input_audio' part: the served models read text only"),
    ({"model": "base", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
     "messages[0].content: content[0].text: a text part needs a string 'text'"),
    ({"model": "base", "messages": [{"role": "user", "content": ["hi"]}]}, "content[0]: a content part is an object"),
    ({"model": "base", "messages": [{"role": "tool", "content": "42", "tool_call_id": "x"}, *user()]},
     "messages[0].role: a 'tool' message answers a tool call: the served models do not call tools"),
    ({"model": "base", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "",
      "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, *user()]},
     "messages[1].tool_calls: the served models do not call tools"),
    ({"model": "base", "messages": user(), "logprobs": "yes"}, "logprobs: Input should be a valid boolean"),
    ({"model": "base", "messages": user(), "logprobs": True, "top_logprobs": 21}, "top_logprobs: Input should be less than or equal to 20"),
    ({"model": "base", "messages": user(), "logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    ({"model": "base", "messages": user(), "top_logprobs": 2}, "top_logprobs needs logprobs: true"),
    ({"model": "base", "messages": user(), "response_format": {"type": "xml"}}, "response_format.type"),
    ({"model": "base", "messages": user(), "response_format": {"type": "json_schema"}},
     "a json_schema response format needs 'json_schema'"),
    ({"model": "base", "messages": user(), "response_format": {"type": "json_schema", "json_schema": {"schema": 3}}},
     "response_format.json_schema.schema"),
    ({"model": "base", "messages": user(), "response_format": {"type": "json_object"}, "guided_choice": ["a", "b"]},
     "guided_choice and response_format each constrain the reply"),
    ({"model": "base", "messages": user(), "tools": [{"type": "function", "function": {"name": "f"}}]},
     "tools: the served models do not call tools"),
    ({"model": "base", "messages": user(), "tool_choice": "required"}, "tool_choice: the served models do not call tools"),
    ({"model": "base", "messages": user(), "frequency_penalty": 0.5}, "frequency_penalty is not supported"),
    ({"model": "base", "messages": user(), "presence_penalty": 1}, "presence_penalty is not supported"),
    ({"model": "base", "messages": user(), "logit_bias": {"5": 100}}, "logit_bias is not supported"),
    ({"model": "base", "messages": user(), "functions": [{"name": "f"}]}, "functions is not supported"),
    ({"model": "base", "messages": user(), "modalities": ["text", "audio"]}, "modalities is not supported"),
    ({"model": "base", "messages": user(), "web_search_options": {}}, "web_search_options is not supported"),
    ({"model": "base", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"model": "base", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
     "the last message must be from the user"),
    ({"model": "base", "messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"},
                                    {"role": "user", "content": "c"}]}, "system messages must come before"),
    ({"model": "base", "messages": user(), "max_tokens": -5}, "max_tokens: Input should be greater than or equal to 1"),
    ({"model": "base", "messages": user(), "max_tokens": 0}, "max_tokens"),
    ({"model": "base", "messages": user(), "max_tokens": 10**12}, "max_tokens: Input should be less than or equal to"),
    ({"model": "base", "messages": user(), "max_tokens": "many"}, "max_tokens"),
    ({"model": "base", "messages": user(), "temperature": 7}, "temperature"),
    ({"model": "base", "messages": user(), "top_p": 0}, "top_p"),
    ({"model": "base", "messages": user(), "n": 3}, "n"),
    ({"model": 12, "messages": user()}, "model"),
    ({"model": "base", "messages": user(), "guided_choice": ["only one"]}, "guided_choice: List should have at least 2"),
    ({"model": "base", "messages": user(), "guided_choice": ["yes", "  "]}, "guided_choice[1]: a guided choice must say"),
])
def test_malformed_requests_are_400_naming_the_field(api, body, fragment):
    r = post(api, body)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["type"] == "invalid_request_error"
    assert fragment in err["message"], err["message"]


@pytest.mark.parametrize("body, fragment", [
    ({"model": "base"}, "prompt: Field required"),
    ({"model": "base", "prompt": ""}, "prompt: the prompt is empty"),
    ({"model": "base", "prompt": ["a", "b"]}, "one prompt per request (got 2)"),
    ({"model": "base", "prompt": [1, 2, 3]}, "prompt"),
    ({"model": "base", "prompt": "hi", "logprobs": 21}, "logprobs: Input should be less than or equal to 20"),
    ({"model": "base", "prompt": "hi", "echo": True}, "echo is not supported by this service: the reply holds only the continuation"),
    ({"model": "base", "prompt": "hi", "suffix": "end"}, "suffix is not supported by this service: the served models do not fill in the middle"),
    ({"model": "base", "prompt": "hi", "best_of": 3}, "best_of"),
    ({"model": "base", "prompt": "hi", "n": 2}, "n"),
    ({"model": "base", "prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ({"model": "base", "prompt": "hi", "presence_penalty": 0.3}, "presence_penalty is not supported"),
])
def test_malformed_text_completions_are_400_naming_the_field(api, body, fragment):
    r = post(api, body, "/v1/completions")
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["type"] == "invalid_request_error"
    assert fragment in err["message"], err["message"]


def test_a_text_prompt_longer_than_the_context_is_400_naming_the_prompt(api):
    r = post(api, {"model": "short", "prompt": "the quick brown fox " * 40}, "/v1/completions")
    assert r.status_code == 400
    assert error_of(r)["code"] == "context_length_exceeded" and error_of(r)["param"] == "prompt"


def test_invalid_json_is_400(api):
    r = api.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "JSON" in error_of(r)["message"]


def test_prompt_longer_than_context_is_400(api):
    r = post(api, {"model": "short", "messages": user("the quick brown fox " * 40)})
    assert r.status_code == 400
    err = error_of(r)
    assert err["code"] == "context_length_exceeded"
    assert "context of 64 tokens" in err["message"]


def test_max_tokens_beyond_context_is_400_with_the_allowance(api):
    r = post(api, {"model": "short", "messages": user("hi"), "max_tokens": 500})
    assert r.status_code == 400
    assert "ask for at most" in error_of(r)["message"]


def test_server_keeps_serving_after_bad_requests(api):
    for body in ({"model": "nope", "messages": user()}, {"model": "base", "messages": []}):
        post(api, body)
    r = post(api, {"model": "base", "messages": user(), "max_tokens": 3})
    assert r.status_code == 200
    assert r.json()["usage"]["completion_tokens"] <= 3


def test_an_empty_assistant_turn_does_not_block_the_conversation(api):
    """A model may answer with nothing; the next user turn must still be answered."""
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}, {"role": "user", "content": "b"}]
    r = post(api, {"model": "base", "messages": messages, "max_tokens": 2})
    assert r.status_code == 200, r.text
