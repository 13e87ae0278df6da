"""`lima serve` serves what training registered in $LIMA_HOME/lima.db, and skips what vanished."""

import httpx

from lima.store import connect
from lima.store.registry import register, registered
from tests.helpers.server import serving


def test_registered_models_are_served_at_start(tiny_base, lima_home, tmp_path):
    db = connect()
    register(db, "lima-zero-shot", str(tiny_base), kind="trained", run_id="run-1")
    register(db, "lima-dialogue", str(tmp_path / "deleted-since"), kind="trained", run_id="run-2")
    assert list(registered(db)) == ["lima-zero-shot", "lima-dialogue"]
    log = tmp_path / "serve.log"
    with serving(["--model", f"base={tiny_base}"], log) as base:
        served = [m["id"] for m in httpx.get(base + "/v1/models").json()["data"]]
    assert served == ["base", "lima-zero-shot"]
    assert "skipping registered model: model 'lima-dialogue'" in log.read_text()


def test_registering_again_replaces_the_folder(tiny_base, tmp_path):
    db = connect()
    register(db, "lima-dialogue", "/old", kind="trained")
    register(db, "lima-dialogue", str(tiny_base), kind="trained")
    assert registered(db) == {"lima-dialogue": str(tiny_base)}


def test_a_named_model_that_fails_does_not_stop_the_others(tiny_base, tmp_path):
    log = tmp_path / "serve.log"
    with serving(["--no-registry", "--model", f"base={tiny_base}", "--model",
                  f"broken={tmp_path / 'missing'}"], log) as base:
        health = httpx.get(base + "/health").json()
        assert health["models"] == ["base"] and "does not exist" in health["failed"]["broken"]
        r = httpx.post(base + "/v1/chat/completions", json={"model": "broken", "messages": [
            {"role": "user", "content": "hi"}]})
        assert r.status_code == 503 and "could not be loaded" in r.json()["error"]["message"]
