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
    ({"model": "base", "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]},
     "messages[0].content"),
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
