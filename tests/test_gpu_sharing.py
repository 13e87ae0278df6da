"""One GPU shared by serving and training: the service sleeps for the run and wakes after it,
whatever the outcome; chat in between gets a clear answer. Checked against a stand-in `vllm`."""

import json
import shutil
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from lima.store import connect
from lima.store import runs
from training import common, service_link, train
from tests.helpers.server import serving
from tests.helpers.training import train_args, write_lima

FAKE = str(Path(__file__).parent / "fakes" / "vllm")


@pytest.fixture
def vllm_service(tmp_path, tiny_base):
    record = tmp_path / "vllm-record.jsonl"
    env = {"LIMA_VLLM": FAKE, "LIMA_VLLM_REQUIRE_GPU": "0", "FAKE_VLLM_RECORD": str(record),
           "CUDA_VISIBLE_DEVICES": "0"}
    serve = ["--engine", "vllm", "--no-registry", "--model", f"base={tiny_base}"]
    with serving(serve, tmp_path / "serve.log", env=env) as url:
        yield url, record


def events(record: Path, kind: str = "request") -> list[dict]:
    return [e for e in map(json.loads, record.read_text().splitlines()) if e["kind"] == kind]


def chat(url: str) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", timeout=30,
                      json={"model": "base", "messages": [{"role": "user", "content": "hi there"}]})


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_the_service_sleeps_during_the_run_and_serves_the_new_model_after(vllm_service, tiny_base, tmp_path):
    url, record = vllm_service
    summary = train.run(train_args(tiny_base, write_lima(tmp_path / "lima.jsonl"), service_url=url,
                                   pause_service="always"))
    db = connect()
    [run] = runs.history(db)
    steps = list(db["run_progress"].rows_where("run_id = ?", [run.id], order_by="step"))
    calls = [(e["path"], e["time"]) for e in events(record) if e["path"].startswith(("/sleep", "/wake_up"))]
    assert [path for path, _ in calls] == ["/sleep?level=1", "/wake_up"]
    assert calls[0][1] < epoch(steps[0]["time"]) and calls[1][1] > epoch(steps[-1]["time"])
    # then the trained model is started as its own vLLM server, with its own chat template
    started = [e["argv"] for e in events(record, "start")]
    new = next(argv for argv in started if "lima-dialogue" in argv)
    assert new[new.index("--chat-template") + 1] == str(Path(run.model_path) / "chat_template.jinja")
    assert "now served as 'lima-dialogue'" in summary
    assert chat(url).status_code == 200


def test_chat_while_sleeping_is_told_the_model_is_retraining(vllm_service):
    url, _ = vllm_service
    assert httpx.post(url + "/admin/sleep", timeout=30).status_code == 200
    assert httpx.get(url + "/health").json()["status"] == "sleeping"
    reply = chat(url)
    assert reply.status_code == 503
    assert "retraining" in reply.json()["error"]["message"]
    assert httpx.post(url + "/admin/wake", timeout=30).status_code == 200
    assert chat(url).status_code == 200


def test_a_failed_run_still_wakes_the_service(vllm_service, tiny_base, tmp_path):
    url, record = vllm_service
    broken = tmp_path / "broken"
    shutil.copytree(tiny_base, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(common.TrainingError):
        train.run(train_args(broken, write_lima(tmp_path / "lima.jsonl"), service_url=url, pause_service="always"))
    assert [e["path"] for e in events(record) if e["path"].startswith(("/sleep", "/wake"))] == \
        ["/sleep?level=1", "/wake_up"]
    assert chat(url).status_code == 200


def test_auto_pauses_only_when_the_gpu_is_shared(vllm_service, monkeypatch):
    url, record = vllm_service  # this service reports CUDA_VISIBLE_DEVICES=0
    assert httpx.get(url + "/health").json()["gpus"] == "0"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with service_link.paused(url, "auto", training_on_gpu=True) as paused:
        assert not paused  # a second GPU: nothing to free
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with service_link.paused(url, "auto", training_on_gpu=True) as paused:
        assert paused and chat(url).status_code == 503
    assert chat(url).status_code == 200
    with service_link.paused(url, "auto", training_on_gpu=False) as paused:
        assert not paused  # a CPU run leaves the GPU alone


def test_a_cpu_service_is_never_paused(service):
    assert httpx.get(service + "/health").json()["gpus"] == "none"
    with service_link.paused(service, "auto", training_on_gpu=True) as paused:
        assert not paused


def test_overlap_rules():
    assert service_link.overlaps("all", "1") and service_link.overlaps("0,1", "1")
    assert not service_link.overlaps("0", "1") and not service_link.overlaps("none", "all")
