"""A starting service in process: while its models load it says so, to probes, to clients and to
the workbench's banner, and a request for a loading model is told to wait, not that it is unknown."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.engines.transformers_engine import TransformersEngine
from service.warmup import Warmup
from ui.app import warmup_banner

CHAT = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def starting():
    warmup = Warmup(["slow"])
    engine = TransformersEngine(device="cpu", quantize="none")
    with TestClient(create_app(engine, warmup=warmup), base_url="http://service") as client:
        yield client, warmup
        client.portal.call(engine.close)


def test_health_is_503_with_the_stage_until_every_model_is_in(starting):
    client, warmup = starting
    warmup.set_stage("slow", "compiling the decoder")
    response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "loading" and body["loading"] == {"slow": "compiling the decoder"}
    assert body["service"] == "lima-studio" and body["loading_seconds"] >= 0
    banner = warmup_banner(body)
    assert "Warming up" in banner and "**slow**: compiling the decoder" in banner

    warmup.finished("slow")
    response = client.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert warmup_banner(response.json()) == ""


def test_a_request_for_a_loading_model_is_told_to_wait(starting):
    client, warmup = starting
    warmup.set_stage("slow", "loading the weights")
    response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "model_warming_up" and "warming up (loading the weights" in error["message"]
    # a model nobody is loading is still unknown
    assert client.post("/v1/chat/completions", json={**CHAT, "model": "other"}).status_code == 404

    warmup.finished("slow", error="out of memory")
    response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 503 and "could not be loaded: out of memory" in response.json()["error"]["message"]
    assert client.get("/health").json()["failed"] == {"slow": "out of memory"}


def test_a_message_sent_while_its_model_loads_waits_for_it_and_is_answered(starting, tiny_base, monkeypatch):
    """The workbench's first message may come before the model is in: it is saved at once, the chat
    says it waits (the service's own sentence), and the reply comes once the model has loaded."""
    import threading
    import time

    from lima import conversation as conv
    from lima.service_client import ServiceClient, ServiceProblem
    from lima.store import chatlog, connect
    from ui.pickers import first_model, waiting_note

    client, warmup = starting
    warmup.set_stage("slow", "loading the weights")
    service = ServiceClient("http://service", http_client=client)
    assert first_model(service)[0] == "slow"  # nothing is listed yet: the model being loaded

    def load_later():
        time.sleep(2.5)
        assert client.post("/admin/models", json={"name": "slow", "path": str(tiny_base)}).status_code == 200
        warmup.finished("slow")

    loader = threading.Thread(target=load_later)
    loader.start()
    chat, seen = conv.Chat(), []
    for chat in conv.send(service, chat, "hello early", "slow", temperature=0, max_tokens=4):
        seen.append(chat.waiting)
    loader.join()
    waited = [w for w in seen if w]
    assert waited and "warming up (loading the weights" in waited[0]
    assert waiting_note(waited[0]).startswith("⏳ model 'slow' is warming up")
    assert chat.waiting == "" and [t.role for t in chat.turns] == ["user", "assistant"]
    [user, reply] = chatlog.turns(connect(), chat.conversation_id)
    assert user["content"] == "hello early" and reply["status"] == "complete" and reply["completion_tokens"] == 4

    monkeypatch.setattr(conv, "WAIT_LOADING_S", 0)  # a client told not to wait is refused, as before
    warmup.set_stage("slow2", "waiting")
    with pytest.raises(ServiceProblem, match="warming up") as refused:
        list(conv.send(service, conv.Chat(), "too early", "slow2"))
    assert refused.value.kind == "loading"
