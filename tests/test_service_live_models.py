"""Models are added, replaced and removed while the service runs; bad folders are refused clearly."""

import shutil

import httpx
import openai


def names(service):
    return [m["id"] for m in httpx.get(service + "/v1/models").json()["data"]]


def test_add_replace_and_remove_a_model_live(service, tiny_base, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_base, copy)
    r = httpx.post(service + "/admin/models", json={"name": "lima-dialogue", "path": str(copy)}, timeout=120)
    assert r.status_code == 200, r.text
    assert "lima-dialogue" in names(service)
    client = openai.OpenAI(base_url=service + "/v1", api_key="x", max_retries=0)
    reply = client.chat.completions.create(model="lima-dialogue", messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=5)
    assert reply.usage.completion_tokens >= 1
    # Replacing keeps the name; the old weights are released once in-flight requests end.
    r = httpx.post(service + "/admin/models", json={"name": "lima-dialogue", "path": str(tiny_base)}, timeout=120)
    assert r.status_code == 200 and r.json()["root"] == str(tiny_base)
    assert names(service).count("lima-dialogue") == 1
    assert httpx.delete(service + "/admin/models/lima-dialogue").status_code == 200
    assert "lima-dialogue" not in names(service)


def test_missing_folder_is_refused_and_old_model_kept(service, tmp_path):
    r = httpx.post(service + "/admin/models", json={"name": "base", "path": str(tmp_path / "nowhere")}, timeout=30)
    assert r.status_code == 400
    assert "does not exist" in r.json()["error"]["message"]
    assert "base" in names(service)


def test_folder_that_is_not_a_model_is_refused(service, tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    r = httpx.post(service + "/admin/models", json={"name": "junk", "path": str(tmp_path)}, timeout=30)
    assert r.status_code == 400
    assert "not a model folder (no config.json)" in r.json()["error"]["message"]
    (tmp_path / "config.json").write_text("{}")
    r = httpx.post(service + "/admin/models", json={"name": "junk", "path": str(tmp_path)}, timeout=30)
    assert "has no weights" in r.json()["error"]["message"]
    assert "junk" not in names(service)


def test_bad_model_name_is_refused(service, tiny_base):
    r = httpx.post(service + "/admin/models", json={"name": "has space", "path": str(tiny_base)}, timeout=30)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "name"


def test_corrupt_weights_are_refused_with_the_cause(service, tiny_base, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_base, broken)
    (broken / "model.safetensors").write_bytes(b"garbage")
    r = httpx.post(service + "/admin/models", json={"name": "broken", "path": str(broken)}, timeout=60)
    assert r.status_code == 400
    assert "cannot load" in r.json()["error"]["message"] and "broken" not in names(service)
