"""The vLLM engine's command lines and process lifecycle, against a fake `vllm` (no GPU here),
and a real vLLM run that only happens where a GPU and vLLM are present."""

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lima.model_files import ModelLoadError
from service.engines.base import EngineUnavailable, PromptTooLong
from service.engines.vllm_engine import VllmEngine, VllmUnavailable, gpu_problem
from service.sampling import SamplingParams
from lima.children import lima_command

FAKE = str(Path(__file__).parent / "fakes" / "vllm")


@pytest.fixture
def record(tmp_path, monkeypatch):
    path = tmp_path / "record.jsonl"
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(path))
    return path


def events(path, kind):
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["kind"] == kind]


def lima_folder(tmp_path, tiny_base):
    folder = tmp_path / "lima-dialogue"
    shutil.copytree(tiny_base, folder)
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    return folder


def test_command_line_for_a_checkpoint(tmp_path, tiny_base):
    engine = VllmEngine(FAKE, gpu_fraction=0.3, max_model_len=2048, require_gpu=False, extra_args=["--seed", "1"])
    folder = lima_folder(tmp_path, tiny_base)
    cmd = engine.command("lima-dialogue", str(folder), 8123)
    assert cmd[:3] == [FAKE, "serve", str(folder)]
    assert cmd[cmd.index("--served-model-name") + 1] == "lima-dialogue"
    assert cmd[cmd.index("--port") + 1] == "8123"
    assert cmd[cmd.index("--gpu-memory-utilization") + 1] == "0.30"
    assert cmd[cmd.index("--chat-template") + 1] == str(folder / "chat_template.jinja")
    assert cmd[cmd.index("--max-model-len") + 1] == "2048"
    assert "--enable-sleep-mode" in cmd and cmd[-2:] == ["--seed", "1"]
    assert engine.environment()["VLLM_SERVER_DEV_MODE"] == "1"


def test_refuses_without_gpu_or_executable(tmp_path):
    if gpu_problem() is None:
        pytest.skip("a GPU is present")
    with pytest.raises(VllmUnavailable, match="needs a GPU.*--engine transformers"):
        VllmEngine(FAKE)
    with pytest.raises(VllmUnavailable, match="not found: make vLLM's own environment"):
        VllmEngine(str(tmp_path / "no-vllm"), require_gpu=False)


def test_cli_refuses_vllm_engine_clearly_without_gpu(tiny_base):
    if gpu_problem() is None:
        pytest.skip("a GPU is present")
    result = subprocess.run([*lima_command(), "serve", "--engine", "vllm", "--no-registry",
                             "--model", f"base={tiny_base}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "the vLLM engine needs a GPU" in result.stderr


def test_lifecycle_start_proxy_sleep_wake_stop(tmp_path, tiny_base, record):
    async def scenario():
        engine = VllmEngine(FAKE, require_gpu=False, startup_timeout=30)
        folder = lima_folder(tmp_path, tiny_base)
        info = await engine.add_model("lima-dialogue", str(folder))
        assert info.engine == "vllm" and [m.name for m in engine.models()] == ["lima-dialogue"]
        start = events(record, "start")[0]
        assert start["dev_mode"] == "1" and "--enable-sleep-mode" in start["argv"]

        params = SamplingParams(max_tokens=50)
        prepared = await engine.prepare("lima-dialogue", [{"role": "user", "content": "hello there"}], params)
        deltas = [d async for d in engine.stream(prepared)]
        assert "".join(d.text for d in deltas) == "echo: hello there"
        assert deltas[-1].finish_reason == "stop" and deltas[-1].completion_tokens == 3
        sent = events(record, "request")[-1]["body"]
        assert sent["repetition_penalty"] == 1.2 and sent["top_p"] == 0.9 and sent["temperature"] == 0.7

        await engine.sleep()
        assert events(record, "request")[-1]["path"] == "/sleep?level=1"
        with pytest.raises(EngineUnavailable, match="retraining"):
            await engine.prepare("lima-dialogue", [{"role": "user", "content": "hi"}], params)
        await engine.wake()
        assert events(record, "request")[-1]["path"] == "/wake_up"
        prepared = await engine.prepare("lima-dialogue", [{"role": "user", "content": "TOO LONG"}], params)
        with pytest.raises(PromptTooLong, match="maximum context length"):
            [d async for d in engine.stream(prepared)]

        process = engine.servers["lima-dialogue"].process
        await engine.remove_model("lima-dialogue")
        assert process.poll() is not None  # stopped, not orphaned
        await engine.close()

    asyncio.run(scenario())


def test_log_probabilities_json_and_text_completions_are_passed_to_vllm(tmp_path, tiny_base, record):
    async def scenario():
        engine = VllmEngine(FAKE, require_gpu=False, startup_timeout=30)
        await engine.add_model("lima-dialogue", str(lima_folder(tmp_path, tiny_base)))
        schema = '{"type": "object"}'
        params = SamplingParams(max_tokens=20, logprobs=3, json_schema=schema)
        prepared = await engine.prepare("lima-dialogue", [{"role": "user", "content": "hello there"}], params)
        deltas = [d async for d in engine.stream(prepared)]
        sent = events(record, "request")[-1]
        assert sent["path"] == "/v1/chat/completions"
        assert sent["body"]["logprobs"] is True and sent["body"]["top_logprobs"] == 3
        assert sent["body"]["response_format"]["json_schema"]["schema"] == {"type": "object"}
        tokens = [lp for d in deltas for lp in d.logprobs or []]
        assert [t.token for t in tokens] == ["echo:", " hello", " there"] and tokens[0].logprob == -0.5
        assert tokens[1].top[0].token == " hello" and bytes(tokens[1].bytes) == b" hello"

        prepared = await engine.prepare("lima-dialogue", "once upon", SamplingParams(max_tokens=5, logprobs=1))
        deltas = [d async for d in engine.stream(prepared)]
        sent = events(record, "request")[-1]
        assert sent["path"] == "/v1/completions" and sent["body"]["prompt"] == "once upon"
        assert sent["body"]["logprobs"] == 1 and "response_format" not in sent["body"]
        assert "".join(d.text for d in deltas) == "echo: once upon" and deltas[-1].finish_reason == "stop"
        assert [lp.token for d in deltas for lp in d.logprobs or []] == ["echo:", " once", " upon"]
        await engine.close()

    asyncio.run(scenario())


def test_out_of_memory_at_load_names_the_cause_and_keeps_the_old_model(tmp_path, tiny_base, record, monkeypatch):
    async def scenario():
        engine = VllmEngine(FAKE, require_gpu=False, startup_timeout=30)
        await engine.add_model("base", str(tiny_base))
        too_big = tmp_path / "too-big"
        shutil.copytree(tiny_base, too_big)
        monkeypatch.setenv("FAKE_VLLM_MODE", "oom:too-big")
        with pytest.raises(ModelLoadError, match="out of GPU memory: lower --vllm-gpu-fraction"):
            await engine.add_model("lima-dialogue", str(too_big))
        with pytest.raises(ModelLoadError, match="out of GPU memory"):
            await engine.add_model("base", str(too_big))  # a failed replacement...
        assert [m.name for m in engine.models()] == ["base"]  # ...restores the model it replaced
        assert engine.servers["base"].source == str(tiny_base)
        await engine.close()

    asyncio.run(scenario())


def test_server_that_never_gets_healthy_times_out_and_is_killed(tiny_base, record, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_MODE", "hang")

    async def scenario():
        engine = VllmEngine(FAKE, require_gpu=False, startup_timeout=2)
        with pytest.raises(ModelLoadError, match="did not become healthy within 2s"):
            await engine.add_model("base", str(tiny_base))
        pid = events(record, "start")[0]["pid"]
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    asyncio.run(scenario())


def test_a_server_that_dies_is_restarted(tiny_base, record, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_MODE", "die-once")

    async def scenario():
        engine = VllmEngine(FAKE, require_gpu=False, startup_timeout=30)
        await engine.add_model("base", str(tiny_base))
        for _ in range(100):
            await asyncio.sleep(0.1)
            if len(events(record, "start")) == 2 and engine.models()[0].state == "ready":
                break
        assert len(events(record, "start")) == 2
        assert engine.servers["base"].restarts == 1
        prepared = await engine.prepare("base", [{"role": "user", "content": "back"}], SamplingParams())
        assert "".join([d.text async for d in engine.stream(prepared)]) == "echo: back"
        await engine.close()

    asyncio.run(scenario())


@pytest.mark.gpu
def test_real_vllm_serves_a_model(embedded_model):
    if gpu_problem() is not None or shutil.which(os.environ.get("LIMA_VLLM", "vllm")) is None:
        pytest.skip("needs an NVIDIA GPU and vLLM's environment (LIMA_VLLM)")

    async def scenario():
        engine = VllmEngine(os.environ.get("LIMA_VLLM", "vllm"), gpu_fraction=0.3, max_model_len=2048)
        await engine.add_model("base", str(embedded_model))
        prepared = await engine.prepare("base", [{"role": "user", "content": "Say hello."}],
                                        SamplingParams(max_tokens=32))
        deltas = [d async for d in engine.stream(prepared)]
        assert deltas[-1].completion_tokens > 0
        await engine.close()

    asyncio.run(scenario())
