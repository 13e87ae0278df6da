"""Models are added, replaced and removed while the service runs; bad folders are refused clearly."""

import shutil

import openai


def names(api):
    return [m["id"] for m in api.get("/v1/models").json()["data"]]


def test_add_replace_and_remove_a_model_live(api, tiny_base, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_base, copy)
    r = api.post("/admin/models", json={"name": "lima-dialogue", "path": str(copy)})
    assert r.status_code == 200, r.text
    assert "lima-dialogue" in names(api)
    client = openai.OpenAI(base_url="http://service/v1", api_key="x", max_retries=0, http_client=api)
    reply = client.chat.completions.create(model="lima-dialogue", messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=5)
    assert reply.usage.completion_tokens >= 1
    # Replacing keeps the name; the old weights are released once in-flight requests end.
    r = api.post("/admin/models", json={"name": "lima-dialogue", "path": str(tiny_base)})
    assert r.status_code == 200 and r.json()["root"] == str(tiny_base)
    assert names(api).count("lima-dialogue") == 1
    assert api.delete("/admin/models/lima-dialogue").status_code == 200
    assert "lima-dialogue" not in names(api)


def test_missing_folder_is_refused_and_old_model_kept(api, tmp_path):
    r = api.post("/admin/models", json={"name": "base", "path": str(tmp_path / "nowhere")})
    assert r.status_code == 400
    assert "does not exist" in r.json()["error"]["message"]
    assert "base" in names(api)


def test_folder_that_is_not_a_model_is_refused(api, tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    r = api.post("/admin/models", json={"name": "junk", "path": str(tmp_path)})
    assert r.status_code == 400
    assert "not a model folder (no config.json)" in r.json()["error"]["message"]
    (tmp_path / "config.json").write_text("{}")
    r = api.post("/admin/models", json={"name": "junk", "path": str(tmp_path)})
    assert "has no weights" in r.json()["error"]["message"]
    assert "junk" not in names(api)


def test_bad_model_name_is_refused(api, tiny_base):
    r = api.post("/admin/models", json={"name": "has space", "path": str(tiny_base)})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "name"


def test_corrupt_weights_are_refused_with_the_cause(api, tiny_base, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_base, broken)
    (broken / "model.safetensors").write_bytes(b"garbage")
    r = api.post("/admin/models", json={"name": "broken", "path": str(broken)})
    assert r.status_code == 400
    assert "cannot load" in r.json()["error"]["message"] and "broken" not in names(api)


def test_a_cut_or_incomplete_checkpoint_is_refused_naming_what_is_wrong(api, tiny_base, tmp_path):
    """The lean decoder reads a checkpoint tensor by tensor: a file cut short and a tensor missing
    are refused like any load failure, and the model served before is kept."""
    from safetensors.torch import load_file, save_file

    cut = tmp_path / "cut"
    shutil.copytree(tiny_base, cut)
    weights = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    r = api.post("/admin/models", json={"name": "base", "path": str(cut)})
    assert r.status_code == 400 and "cannot load" in r.json()["error"]["message"]

    incomplete = tmp_path / "incomplete"
    shutil.copytree(tiny_base, incomplete)
    tensors = load_file(incomplete / "model.safetensors")
    del tensors["model.norm.weight"]
    save_file(tensors, incomplete / "model.safetensors", metadata={"format": "pt"})
    r = api.post("/admin/models", json={"name": "base", "path": str(incomplete)})
    assert r.status_code == 400 and "model.norm.weight" in r.json()["error"]["message"]
    assert api.get("/v1/models").json()["data"][0]["root"] == str(tiny_base)
