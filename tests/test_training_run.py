"""Whole runs on the tiny model: both variants, progress rows, registration, served by the service."""

import json
from pathlib import Path

import httpx
import openai
import pytest
import torch
from safetensors.torch import load_file

from lima.store import connect
from lima.store.registry import registered
from lima import paper
from lima.service_client import ServiceClient
from lima.store import runs
from training import train
from tests.helpers.server import serving
from tests.helpers.training import train_args, write_lima


@pytest.fixture
def lima_file(tmp_path):
    return write_lima(tmp_path / "lima.jsonl")


@pytest.mark.parametrize("variant, chain_source", [("zero-shot", None), ("dialogue", "project")])
def test_a_run_records_trains_and_registers(variant, chain_source, tiny_base, lima_file):
    summary = train.run(train_args(tiny_base, lima_file, variant=variant))
    db = connect()
    [run] = runs.history(db)
    record = runs.get(db, run.id)
    assert record.status == "done" and record.error is None and record.ended >= record.started
    assert record.base == str(tiny_base) and record.preset == "cpu-demo"
    assert record.config["sft"]["adam_beta2"] == 0.95 and record.config["sft"]["max_length"] == 128
    assert len(record.dataset_sha256) == 64
    expected = {"lima/stackexchange": 3, "lima/wikihow": 3} | ({"project": 30} if variant == "dialogue" else {})
    assert record.dataset_counts == expected
    steps = runs.steps(db, run.id)
    assert [s.step for s in steps] == list(range(1, record.max_steps + 1))
    assert all(s.loss > 0 and s.learning_rate > 0 for s in steps)
    assert steps[-1].learning_rate < steps[0].learning_rate  # linear decay, no warm-up
    assert steps[0].learning_rate == pytest.approx(1e-5)  # the paper's rate, cpu-demo too
    tokens = [s.tokens for s in steps]
    assert tokens == sorted(tokens) and tokens[0] > 0  # TRL's running count of real tokens
    assert runs.tokens_per_second(db, run.id) > 0
    # the chosen checkpoint was served to the registry under the variant's name
    name = paper.model_name(variant)
    folder = registered(db)[name]
    assert record.model_path == folder and name in summary
    provenance = json.loads(open(f"{folder}/lima_run.json").read())
    assert provenance["dataset_sha256"] == record.dataset_sha256 and provenance["checkpoint"] == "checkpoint-" + \
        str(record.max_steps)
    dev = runs.dev_generations(db, run.id)
    assert {d.epoch for d in dev} == {1.0, 2.0} and {d.prompt_id for d in dev} == {"dev-01", "dev-02"}
    # parameters changed
    before = load_file(f"{tiny_base}/model.safetensors")
    after = load_file(f"{folder}/model.safetensors")
    key = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(before[key], after[key])
    assert not list(Path(record.output_dir).glob("checkpoint-*"))  # only the chosen one was kept


def test_loss_falls_on_a_repeated_tiny_set(tiny_base, tmp_path):
    lima = write_lima(tmp_path / "lima.jsonl", singles=2, multi=0)
    train.run(train_args(tiny_base, lima, variant="zero-shot",
                         extra=["lima.lima_examples=2", "sft.num_train_epochs=30", "sft.learning_rate=3e-3",
                                "sft.lr_scheduler_kwargs={lr_end: 1.0e-3, power: 1.0}",
                                "lima.checkpoints.epochs=[30, 30]", "lima.checkpoints.dev_prompts=0"]))
    db = connect()
    [run] = runs.history(db)
    losses = [r.loss for r in runs.losses(db, run.id)]
    assert len(losses) == 30
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3


def test_trained_model_reloads_and_serves_through_the_service(tiny_base, lima_file, tmp_path):
    train.run(train_args(tiny_base, lima_file, variant="dialogue"))
    with serving(["--model", f"base={tiny_base}", "--quantize", "none"], tmp_path / "serve.log") as base:
        served = [m["id"] for m in httpx.get(base + "/v1/models").json()["data"]]
        assert served == ["base", "lima-dialogue"]
        client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(model="lima-dialogue", max_tokens=8,
                                               messages=[{"role": "user", "content": "how do i boil an egg?"}])
        assert reply.usage.completion_tokens >= 1


def test_a_running_service_is_told_to_load_the_new_model(tiny_base, lima_file, tmp_path):
    serve = ["--no-registry", "--model", f"base={tiny_base}", "--quantize", "none"]
    with serving(serve, tmp_path / "serve.log") as base:
        summary = train.run(train_args(tiny_base, lima_file, variant="zero-shot", service_url=base))
        assert f"now served as 'lima-zero-shot' by {base}" in summary
        served = [m["id"] for m in httpx.get(base + "/v1/models").json()["data"]]
        assert served == ["base", "lima-zero-shot"]


def test_a_service_that_needs_a_key_is_handed_the_new_model_with_it(tiny_base, lima_file, tmp_path, monkeypatch):
    """Training speaks to the service through the one client, with the key from LIMA_API_KEY (the
    workbench hands its runs the session key there): the new model answers without a restart."""
    key = "a-session-key"
    serve = ["--no-registry", "--model", f"base={tiny_base}", "--quantize", "none"]
    with serving(serve, tmp_path / "serve.log", api_key=key) as base:
        with pytest.raises(openai.AuthenticationError):  # the service does want its key
            ServiceClient(base).models()
        monkeypatch.setenv("LIMA_API_KEY", key)
        summary = train.run(train_args(tiny_base, lima_file, variant="zero-shot", service_url=base))
        assert f"now served as 'lima-zero-shot' by {base}" in summary
        client = ServiceClient(base, key)
        assert client.models() == ["base", "lima-zero-shot"]
        events = list(client.stream("lima-zero-shot", [{"role": "user", "content": "how do i boil an egg?"}],
                                    max_tokens=4))
        assert events[-1].done and events[-1].completion_tokens >= 1
