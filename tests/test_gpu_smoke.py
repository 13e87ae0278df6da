"""The GPU smoke script's steps as tests: they run only where a CUDA GPU and vLLM's environment exist."""

import asyncio
import os
import shutil

import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_machine():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (CI has none)")
    if shutil.which(os.environ.get("LIMA_VLLM", "vllm")) is None:
        pytest.skip("needs vLLM's environment (set LIMA_VLLM to its `vllm` executable)")
    from bench import gpu_smoke

    return gpu_smoke


@pytest.fixture(scope="module")
def trained(gpu_machine, tmp_path_factory, embedded_model):
    os.environ["LIMA_HOME"] = str(tmp_path_factory.mktemp("smoke-home"))
    lima = os.environ.get("LIMA_DATASET") or str(gpu_machine.stand_in_lima(tmp_path_factory.mktemp("d") / "l.jsonl"))
    return gpu_machine.train(str(embedded_model), lima, steps=5)


def test_training_on_the_gpu_reports_throughput(gpu_machine, trained):
    model_dir, tokens_per_second, parameters, _ = trained
    assert (model_dir / "chat_template.jinja").exists()
    assert tokens_per_second > 0 and parameters > 100e6
    assert gpu_machine.gpu()[0]


def test_vllm_serves_the_trained_model(gpu_machine, trained):
    results = asyncio.run(gpu_machine.serve_and_chat(trained[0], ["Say hello."], 32))
    first_token, decode, tokens, finish = results[0]
    assert tokens > 0 and finish in ("stop", "length") and first_token > 0


def test_openai_client_through_the_service(gpu_machine, trained):
    assert isinstance(gpu_machine.chat_via_openai(trained[0]), str)
