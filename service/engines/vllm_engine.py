"""The GPU engine: one ``vllm serve`` process per model, supervised, with requests proxied to it.

Why one process per model and not one base with LoRA adapters: the LIMA recipe adds an
end-of-turn token, and vLLM's LoRA adapters cannot add tokens to the vocabulary (nor train
``embed_tokens``/``lm_head``), so each trained model is a full folder (LoRA runs are merged
before saving). Each process gets ``gpu_fraction`` of the GPU's memory.

vLLM pins older transformers/torch/fastapi than this product, so it lives in its own virtual
environment and is started as an executable (``--vllm-executable``, default ``vllm`` on PATH).
Prompts are rendered by vLLM with the checkpoint's own ``chat_template.jinja`` (passed
explicitly with ``--chat-template``), the same template training used.

Freeing the GPU for a retrain uses vLLM's sleep mode (level 1: weights to host RAM, KV cache
dropped; waking takes seconds), which needs ``VLLM_SERVER_DEV_MODE=1`` and ``--enable-sleep-mode``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai

from lima import children, home
from lima.model_files import ModelLoadError, check_folder
from service.engines.base import (Delta, Engine, EngineUnavailable, InvalidRequest, Logprob, ModelInfo, Prepared,
                                  PromptTooLong, StageCallback, UnknownModel)
from service.sampling import SamplingParams

log = logging.getLogger("lima.vllm")

INSTALL_HINT = ("make vLLM's own environment: python3 -m venv ~/.venvs/vllm && "
                "~/.venvs/vllm/bin/pip install vllm==0.33.0, then pass --vllm-executable ~/.venvs/vllm/bin/vllm")

# Causes recognised in a dying server's log, and what the person can do about them.
FAILURE_HINTS = [
    ("CUDA out of memory", "out of GPU memory: lower --vllm-gpu-fraction, set --vllm-max-model-len, "
                           "or serve fewer models at once"),
    ("OutOfMemoryError", "out of GPU memory: lower --vllm-gpu-fraction or serve fewer models at once"),
    ("No CUDA GPUs are available", "no GPU visible to vLLM (check CUDA_VISIBLE_DEVICES and --gpus all)"),
    ("CUDA driver version is insufficient", "the NVIDIA driver is older than vLLM's CUDA build: update the driver "
                                            "or install a vLLM wheel built for your CUDA"),
    ("undefined symbol", "vLLM and torch builds do not match in vLLM's environment: reinstall vllm there"),
]


class VllmUnavailable(RuntimeError):
    """The vLLM engine cannot start here; the message says why and what to do."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def gpu_problem() -> str | None:
    """None when an NVIDIA GPU is visible, else the reason it is not."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "no NVIDIA GPU found (nvidia-smi is not installed)"
    result = subprocess.run([smi, "-L"], capture_output=True, text=True)
    if result.returncode != 0 or "GPU" not in result.stdout:
        return f"no NVIDIA GPU found (nvidia-smi -L: {(result.stderr or result.stdout).strip()[:200]})"
    return None


def resolve_executable(executable: str) -> str:
    found = shutil.which(executable) or (executable if Path(executable).is_file() else None)
    if not found:
        raise VllmUnavailable(f"vLLM executable '{executable}' not found: {INSTALL_HINT}")
    return found


@dataclass
class Server:
    name: str
    source: str
    port: int
    process: subprocess.Popen
    log_path: Path
    info: ModelInfo
    stopping: bool = False
    restarts: int = 0
    watcher: asyncio.Task | None = field(default=None, repr=False)


class VllmEngine(Engine):
    kind = "vllm"

    def __init__(self, executable: str = "vllm", gpu_fraction: float = 0.28, max_model_len: int | None = None,
                 extra_args: list[str] | None = None, require_gpu: bool = True, startup_timeout: float = 900,
                 sleep_mode: bool = True, host: str = "127.0.0.1", max_restarts: int = 3):
        if require_gpu and (problem := gpu_problem()):
            raise VllmUnavailable(f"the vLLM engine needs a GPU: {problem}. Use --engine transformers on this machine.")
        self.executable = resolve_executable(executable)
        if not 0 < gpu_fraction < 1:
            raise ValueError(f"--vllm-gpu-fraction must be between 0 and 1, got {gpu_fraction}")
        self.gpu_fraction, self.max_model_len = gpu_fraction, max_model_len
        self.extra_args = list(extra_args or [])
        self.startup_timeout, self.sleep_mode, self.host = startup_timeout, sleep_mode, host
        self.max_restarts = max_restarts
        self.servers: dict[str, Server] = {}
        self._sleeping = False
        self._lock = asyncio.Lock()

    # -- process lifecycle --------------------------------------------------------------------

    def command(self, name: str, model_path: str, port: int) -> list[str]:
        """The ``vllm serve`` command line for one model."""
        cmd = [self.executable, "serve", model_path, "--served-model-name", name,
               "--host", self.host, "--port", str(port),
               "--gpu-memory-utilization", f"{self.gpu_fraction:.2f}"]
        template = Path(model_path) / "chat_template.jinja"
        if template.is_file():
            cmd += ["--chat-template", str(template)]
        if self.max_model_len:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.sleep_mode:
            cmd += ["--enable-sleep-mode"]
        return cmd + self.extra_args

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.sleep_mode:
            env["VLLM_SERVER_DEV_MODE"] = "1"  # exposes /sleep and /wake_up
        return env

    def _spawn(self, name: str, source: str, port: int) -> tuple[subprocess.Popen, Path]:
        logs = home.home() / "logs"
        logs.mkdir(exist_ok=True)
        log_path = logs / f"vllm-{name}.log"
        with open(log_path, "ab") as out:
            process = children.spawn(self.command(name, source, port), env=self.environment(), stdout=out,
                                     stderr=subprocess.STDOUT)
        return process, log_path

    async def _wait_healthy(self, name: str, process: subprocess.Popen, port: int, log_path: Path) -> None:
        deadline = asyncio.get_running_loop().time() + self.startup_timeout
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                if process.poll() is not None:
                    raise ModelLoadError(f"model '{name}': vLLM exited with code {process.returncode} while "
                                         f"loading: {explain_failure(log_path)}")
                try:
                    if (await client.get(f"http://{self.host}:{port}/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    await asyncio.to_thread(children.stop, process, 30)
                    raise ModelLoadError(f"model '{name}': vLLM did not become healthy within "
                                         f"{self.startup_timeout:.0f}s; see {log_path}")
                await asyncio.sleep(0.5)

    async def _start(self, name: str, source: str) -> Server:
        port = free_port(self.host)
        process, log_path = self._spawn(name, source, port)
        try:
            await self._wait_healthy(name, process, port, log_path)
        except BaseException:
            await asyncio.to_thread(children.stop, process, 30)
            raise
        info = ModelInfo(name=name, source=source, engine=self.kind, context_length=self.max_model_len)
        server = Server(name, source, port, process, log_path, info)
        server.watcher = asyncio.create_task(self._supervise(server))
        return server

    async def _supervise(self, server: Server) -> None:
        """Restart a server that died on its own (at most ``max_restarts`` times)."""
        while True:
            code = await asyncio.to_thread(server.process.wait)
            if server.stopping:
                return
            log.warning("vLLM server for %s exited with code %s: %s", server.name, code,
                        explain_failure(server.log_path))
            if server.restarts >= self.max_restarts:
                server.info.state = "failed"
                return
            server.restarts += 1
            server.info.state = "restarting"
            await asyncio.sleep(min(2 ** server.restarts, 30))
            server.process, _ = self._spawn(server.name, server.source, server.port)
            try:
                await self._wait_healthy(server.name, server.process, server.port, server.log_path)
                server.info.state = "ready"
            except ModelLoadError as exc:
                log.error("%s", exc)

    async def _stop(self, server: Server) -> None:
        server.stopping = True
        await asyncio.to_thread(children.stop, server.process, 30)
        if server.watcher:
            server.watcher.cancel()

    # -- Engine -------------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        return [s.info for s in self.servers.values()]

    async def add_model(self, name: str, source: str, on_stage: StageCallback | None = None) -> ModelInfo:
        if on_stage:
            on_stage("starting its vLLM server (loading, profiling memory, capturing CUDA graphs)")
        path = check_folder(name, source)
        source = str(path) if path else source
        async with self._lock:
            old = self.servers.pop(name, None)
            if old is not None:  # one GPU rarely fits two copies: stop the old one, restore it on failure
                await self._stop(old)
            try:
                server = await self._start(name, source)
            except ModelLoadError as exc:
                if old is not None:
                    try:
                        self.servers[name] = await self._start(old.name, old.source)
                    except ModelLoadError as again:
                        raise ModelLoadError(f"{exc}; restoring the previous '{name}' failed too: {again}") from exc
                raise
            self.servers[name] = server
        return server.info

    async def remove_model(self, name: str) -> None:
        server = self.servers.pop(name, None)
        if server is None:
            raise UnknownModel(name, list(self.servers))
        await self._stop(server)

    def _server(self, name: str) -> Server:
        if self._sleeping:
            raise EngineUnavailable("the model is retraining: serving resumes when the training run ends")
        server = self.servers.get(name)
        if server is None:
            raise UnknownModel(name, list(self.servers))
        if server.info.state != "ready":
            raise EngineUnavailable(f"model '{name}' is {server.info.state}: its vLLM server exited; "
                                    f"see {server.log_path}")
        return server

    async def prepare(self, model: str, messages: list[dict[str, str]] | str, params: SamplingParams) -> Prepared:
        server = self._server(model)  # vLLM itself checks the context length and answers 400
        return Prepared(model, messages, params, payload={"port": server.port})

    async def stream(self, prepared: Prepared):
        """The request passed on to the model's vLLM server: chat or text completion, the same
        sampling, constraint and log probabilities (vLLM computes those its own way: see the README)."""
        p, text = prepared.params, isinstance(prepared.messages, str)
        client = openai.AsyncOpenAI(base_url=f"http://{self.host}:{prepared.payload['port']}/v1",
                                    api_key="EMPTY", max_retries=0, timeout=None)
        extra = {"repetition_penalty": p.repetition_penalty}
        if p.choices:
            extra["guided_choice"] = list(p.choices)
        if p.top_k:
            extra["top_k"] = p.top_k
        if p.ignore_eos:
            extra["ignore_eos"] = True
        common = dict(model=prepared.model, stream=True, stream_options={"include_usage": True},
                      temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens,
                      stop=list(p.stop) or None, seed=p.seed, extra_body=extra)
        if p.json_schema is not None:
            common["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "response", "schema": json.loads(p.json_schema)}}
        try:
            if text:
                stream = await client.completions.create(prompt=prepared.messages, logprobs=p.logprobs, **common)
            else:
                wanted = {"logprobs": True, "top_logprobs": p.logprobs} if p.logprobs is not None else {}
                stream = await client.chat.completions.create(messages=prepared.messages, **wanted, **common)
            finish, usage = None, None
            async for chunk in stream:
                if chunk.usage:
                    usage = chunk.usage
                if chunk.choices:
                    choice = chunk.choices[0]
                    piece = choice.text if text else (choice.delta.content if choice.delta else None)
                    logprobs = _logprobs(choice.logprobs, text) if p.logprobs is not None else None
                    if piece or logprobs:
                        yield Delta(text=piece or "", logprobs=logprobs)
                    finish = choice.finish_reason or finish
            yield Delta(finish_reason=finish or "stop",
                        prompt_tokens=usage.prompt_tokens if usage else 0,
                        completion_tokens=usage.completion_tokens if usage else 0)
        except openai.BadRequestError as exc:
            message = _vllm_message(exc)
            # vLLM says so in words only; the same error as the transformers engine's, so clients see one code
            kind = PromptTooLong if "maximum context length" in message else InvalidRequest
            raise kind(message, "prompt" if text else "messages") from exc
        except openai.APIConnectionError as exc:
            raise EngineUnavailable(f"the vLLM server for '{prepared.model}' is not answering") from exc
        finally:
            await client.close()

    @property
    def sleeping(self) -> bool:
        return self._sleeping

    def gpus(self) -> str:
        return os.environ.get("CUDA_VISIBLE_DEVICES", "all")

    async def sleep(self) -> None:
        self._sleeping = True
        async with httpx.AsyncClient(timeout=120) as client:
            for server in self.servers.values():
                if self.sleep_mode:
                    (await client.post(f"http://{self.host}:{server.port}/sleep", params={"level": 1})).raise_for_status()
                else:
                    await self._stop(server)

    async def wake(self) -> None:
        async with httpx.AsyncClient(timeout=300) as client:
            for name, server in list(self.servers.items()):
                if self.sleep_mode:
                    (await client.post(f"http://{self.host}:{server.port}/wake_up")).raise_for_status()
                else:
                    self.servers[name] = await self._start(name, server.source)
        self._sleeping = False

    async def close(self) -> None:
        for server in list(self.servers.values()):
            await self._stop(server)
        self.servers.clear()


def _logprobs(found, text: bool) -> list[Logprob] | None:
    """vLLM's log probabilities in the engine-neutral shape (chat's list of tokens, or the text
    completion's parallel lists)."""
    if found is None:
        return None
    if text:
        tops = found.top_logprobs or [{}] * len(found.tokens or [])
        return [Logprob.of(token.encode(), lp, [Logprob.of(t.encode(), v) for t, v in top.items()])
                for token, lp, top in zip(found.tokens or [], found.token_logprobs or [], tops)]
    return [Logprob(t.token, t.logprob, t.bytes or list(t.token.encode()),
                    [Logprob(a.token, a.logprob, a.bytes or list(a.token.encode())) for a in t.top_logprobs or []])
            for t in found.content or []]


def _vllm_message(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    return str(body.get("message") or body.get("error", {}).get("message") or exc.message)


def explain_failure(log_path: Path, tail: int = 4000) -> str:
    try:
        text = log_path.read_text(errors="replace")[-tail:]
    except OSError:
        return "no log"
    for needle, hint in FAILURE_HINTS:
        if needle in text:
            return hint
    last = [line for line in text.strip().splitlines() if line.strip()][-3:]
    return " | ".join(last) or "no output"
