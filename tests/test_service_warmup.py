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
