"""The OpenAI-compatible HTTP API over one engine.

    GET  /health                  readiness (503 while start-up models load, with their stages), engine,
                                  models and whether serving is paused
    GET  /v1/models               the served models (OpenAI list format)
    GET  /v1/models/{id}          one of them (404 in OpenAI's error shape for an unknown one)
    POST /v1/chat/completions     chat, streaming (SSE) or not, with usage counts and log probabilities
    POST /v1/completions          a text prompt continued as it is (no chat template), the same engine
    POST /admin/models            serve a folder or hub id under a name (add or replace, live)
    DELETE /admin/models/{name}   stop serving a model
    POST /admin/sleep, /admin/wake   free / restore the accelerator around a training run

The app is built by ``create_app(engine)``: nothing happens at import time. Engines raise engine
errors (``service.engines.base``); this module alone turns them into HTTP answers with
OpenAI-style bodies.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from openai.types import Completion, CompletionChoice
from openai.types.chat import (ChatCompletion, ChatCompletionChunk, ChatCompletionMessage,
                               ChatCompletionTokenLogprob)
from openai.types.chat.chat_completion import Choice, ChoiceLogprobs
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.chat.chat_completion_chunk import ChoiceLogprobs as ChunkLogprobs
from openai.types.chat.chat_completion_token_logprob import TopLogprob
from openai.types.completion_choice import Logprobs as TextLogprobs
from openai.types.completion_usage import CompletionUsage

from lima.model_files import ModelLoadError
from lima.service_client import SERVICE
from lima.validation import validation_message
from service.engines.base import (Delta, Engine, EngineError, EngineUnavailable, InvalidRequest, Logprob,
                                  ModelInfo, Prepared, PromptTooLong, UnknownModel, WarmingUp)
from service.protocol import ChatCompletionRequest, CompletionRequest, ModelRegistration, RequestError
from service.sampling import SamplingParams
from service.warmup import Warmup


def _error(status: int, message: str, type: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    return JSONResponse(status_code=status,
                        content={"error": {"message": message, "type": type, "param": param, "code": code}})


def create_app(engine: Engine, api_key: str | None = None, warmup: Warmup | None = None) -> FastAPI:
    """The app over ``engine``; whoever created the engine closes it. ``warmup`` tells which start-up
    models are still loading (a request for one is told to wait) and which could not load and why
    (a request for one gets the reason, not a bare 404)."""
    app = FastAPI(title="LIMA Studio service")
    warmup = warmup or Warmup()
    failures = warmup.failures
    app.state.engine = engine

    def authorized(request: Request) -> None:
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            raise RequestError("Missing or wrong API key (send 'Authorization: Bearer <key>')",
                               status=401, type="authentication_error", code="invalid_api_key")

    @app.exception_handler(RequestError)
    async def request_error(_, exc: RequestError):
        return JSONResponse(status_code=exc.status, content=exc.body())

    @app.exception_handler(RequestValidationError)
    async def validation_error(_, exc: RequestValidationError):
        message, param = validation_message(exc.errors())
        return _error(400, message, "invalid_request_error", "invalid_request", param)

    @app.exception_handler(EngineError)
    async def engine_error(_, exc: EngineError):
        return _engine_error(exc)

    @app.exception_handler(ModelLoadError)
    async def load_error(_, exc: ModelLoadError):
        return _error(400, str(exc), "invalid_request_error", "model_load_failed", "path")

    @app.get("/health")
    async def health():
        """200 once every start-up model has loaded (or failed); 503 with the stages while loading.
        ``service`` and ``pid`` let a client check it is talking to the LIMA Studio it started."""
        status = "loading" if warmup.loading else "sleeping" if engine.sleeping else "ok"
        body = {"service": SERVICE, "status": status, "engine": engine.kind,
                "models": [m.name for m in engine.models()], "loading": dict(warmup.stages),
                "loading_seconds": warmup.seconds() if warmup.loading else None, "failed": failures,
                "gpus": engine.gpus(), "pid": os.getpid()}
        return JSONResponse(body, status_code=503 if warmup.loading else 200)

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def list_models():
        return {"object": "list", "data": [_card(m) for m in engine.models()]}

    @app.get("/v1/models/{name}", dependencies=[Depends(authorized)])
    async def get_model(name: str):
        found = next((m for m in engine.models() if m.name == name), None)
        if found is None:
            raise UnknownModel(name, [m.name for m in engine.models()])
        return _card(found)

    async def prepare(req: ChatCompletionRequest | CompletionRequest, prompt: list[dict[str, str]] | str) -> Prepared:
        params = SamplingParams.from_request(req)
        stage = warmup.stage(req.model)
        if stage is not None:
            raise WarmingUp(f"model '{req.model}' is warming up ({stage}, {warmup.seconds()} s so far); "
                            "try again in a moment", "model")
        if req.model in failures and req.model not in {m.name for m in engine.models()}:
            raise EngineUnavailable(f"model '{req.model}' could not be loaded: {failures[req.model]}")
        return await engine.prepare(req.model, prompt, params)

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
    async def chat_completions(req: ChatCompletionRequest):
        prepared = await prepare(req, req.openai_messages())
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(_sse(engine, prepared, completion_id, usage), media_type="text/event-stream")
        return await _complete(engine, prepared, completion_id)

    @app.post("/v1/completions", dependencies=[Depends(authorized)])
    async def text_completions(req: CompletionRequest):
        prepared = await prepare(req, req.prompt)
        completion_id = f"cmpl-{uuid.uuid4().hex[:24]}"
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(_text_sse(engine, prepared, completion_id, usage),
                                     media_type="text/event-stream")
        return await _complete(engine, prepared, completion_id, chat=False)

    @app.post("/admin/models", dependencies=[Depends(authorized)])
    async def add_model(body: ModelRegistration):
        info = await engine.add_model(body.name, body.path)
        failures.pop(body.name, None)
        return {"id": info.name, "root": info.source, "max_model_len": info.context_length, "engine": info.engine}

    @app.delete("/admin/models/{name}", dependencies=[Depends(authorized)])
    async def remove_model(name: str):
        await engine.remove_model(name)
        return {"id": name, "deleted": True}

    @app.post("/admin/sleep", dependencies=[Depends(authorized)])
    async def sleep():
        await engine.sleep()
        return {"sleeping": True}

    @app.post("/admin/wake", dependencies=[Depends(authorized)])
    async def wake():
        await engine.wake()
        return {"sleeping": False}

    return app


def _card(m: ModelInfo) -> dict:
    return {"id": m.name, "object": "model", "created": int(time.time()), "owned_by": "lima-studio",
            "root": m.source, "max_model_len": m.context_length, "engine": m.engine, "state": m.state}


def _engine_error(exc: EngineError) -> JSONResponse:
    """The HTTP answer to each kind of engine error."""
    if isinstance(exc, UnknownModel):
        return _error(404, str(exc), "invalid_request_error", "model_not_found", exc.param)
    if isinstance(exc, PromptTooLong):
        return _error(400, str(exc), "invalid_request_error", "context_length_exceeded", exc.param)
    if isinstance(exc, InvalidRequest):
        return _error(400, str(exc), "invalid_request_error", "invalid_request", exc.param)
    if isinstance(exc, WarmingUp):
        return _error(503, str(exc), "service_unavailable", "model_warming_up", exc.param)
    if isinstance(exc, EngineUnavailable):
        return _error(503, str(exc), "service_unavailable", "model_unavailable", exc.param)
    return _error(500, str(exc), "server_error", "engine_error", exc.param)


def _chat_logprobs(logprobs: list[Logprob]) -> list[ChatCompletionTokenLogprob]:
    """OpenAI's chat shape: each token with its bytes, log probability and alternatives."""
    return [ChatCompletionTokenLogprob(
        token=lp.token, bytes=lp.bytes, logprob=lp.logprob,
        top_logprobs=[TopLogprob(token=t.token, bytes=t.bytes, logprob=t.logprob) for t in lp.top])
        for lp in logprobs]


def _text_logprobs(logprobs: list[Logprob], offset: int) -> TextLogprobs:
    """The completions API's older shape: parallel lists, alternatives as {token: log probability}."""
    offsets, tops = [], []
    for lp in logprobs:
        offsets.append(offset)
        offset += len(lp.token)
        top: dict[str, float] = {}
        for t in lp.top:  # two tokens may print alike (parts of characters): the likelier keeps the key
            top.setdefault(t.token, t.logprob)
        tops.append(top)
    return TextLogprobs(tokens=[lp.token for lp in logprobs], token_logprobs=[lp.logprob for lp in logprobs],
                        top_logprobs=tops, text_offset=offsets)


async def _collect(engine: Engine, prepared: Prepared) -> tuple[str, Delta, list[Logprob]] | JSONResponse:
    """The whole reply, its last event (finish reason, usage) and its tokens' log probabilities."""
    text, last, logprobs = [], Delta(), []
    async for delta in engine.stream(prepared):
        if delta.finish_reason == "error":
            return _error(500, delta.text, "server_error", "generation_failed")
        text.append(delta.text)
        logprobs += delta.logprobs or []
        last = delta
    return "".join(text), last, logprobs


async def _complete(engine: Engine, prepared: Prepared, completion_id: str, chat: bool = True) -> JSONResponse:
    """The whole reply as one chat completion (or, ``chat`` false, one text completion)."""
    collected = await _collect(engine, prepared)
    if isinstance(collected, JSONResponse):
        return collected
    text, last, logprobs = collected
    wanted, finish = prepared.params.logprobs is not None, last.finish_reason or "stop"
    common = dict(id=completion_id, created=int(time.time()), model=prepared.model, usage=_usage(last, prepared))
    if chat:
        completion = ChatCompletion(
            object="chat.completion", **common,
            choices=[Choice(index=0, finish_reason=finish, message=ChatCompletionMessage(role="assistant", content=text),
                            logprobs=ChoiceLogprobs(content=_chat_logprobs(logprobs)) if wanted else None)])
    else:
        completion = Completion(
            object="text_completion", **common,
            choices=[CompletionChoice(index=0, text=text, finish_reason=finish,
                                      logprobs=_text_logprobs(logprobs, 0) if wanted else None)])
    return JSONResponse(completion.model_dump(exclude_none=True))


def _usage(last: Delta, prepared: Prepared) -> CompletionUsage:
    prompt = last.prompt_tokens or prepared.prompt_tokens
    return CompletionUsage(prompt_tokens=prompt, completion_tokens=last.completion_tokens,
                           total_tokens=prompt + last.completion_tokens)


async def _events(engine: Engine, prepared: Prepared) -> AsyncIterator[Delta | str]:
    """The engine's events, or an error event (SSE text) that ends the stream."""
    try:
        async for delta in engine.stream(prepared):
            if delta.finish_reason == "error":
                error = {"error": {"message": delta.text, "type": "server_error", "code": "generation_failed"}}
                yield f"data: {json.dumps(error)}\n\n"
                return
            yield delta
    except EngineError as exc:  # after the headers went out: the error travels as an event
        yield f"data: {json.dumps(json.loads(_engine_error(exc).body))}\n\n"


async def _sse(engine: Engine, prepared: Prepared, completion_id: str, include_usage: bool) -> AsyncIterator[str]:
    created = int(time.time())
    wanted = prepared.params.logprobs is not None

    def chunk(delta: ChoiceDelta, finish: str | None = None, usage=None, choices=True, logprobs=None) -> str:
        body = ChatCompletionChunk(
            id=completion_id, object="chat.completion.chunk", created=created, model=prepared.model,
            choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish, logprobs=logprobs)] if choices else [],
            usage=usage)
        return f"data: {body.model_dump_json(exclude_none=True)}\n\n"

    yield chunk(ChoiceDelta(role="assistant", content=""))
    async for delta in _events(engine, prepared):
        if isinstance(delta, str):
            yield delta
            return
        if delta.text or (wanted and delta.logprobs):
            logprobs = ChunkLogprobs(content=_chat_logprobs(delta.logprobs or [])) if wanted else None
            yield chunk(ChoiceDelta(content=delta.text), logprobs=logprobs)
        if delta.finish_reason:
            yield chunk(ChoiceDelta(), finish=delta.finish_reason)
            if include_usage:
                yield chunk(ChoiceDelta(), usage=_usage(delta, prepared), choices=False)
    yield "data: [DONE]\n\n"


async def _text_sse(engine: Engine, prepared: Prepared, completion_id: str, include_usage: bool) -> AsyncIterator[str]:
    created, offset = int(time.time()), 0
    wanted = prepared.params.logprobs is not None

    def chunk(text: str, finish: str | None = None, logprobs: list[Logprob] | None = None, usage=None) -> str:
        # model_construct: a streamed piece has no finish reason yet, which the type does not allow
        choice = CompletionChoice.model_construct(
            index=0, text=text, finish_reason=finish,
            logprobs=_text_logprobs(logprobs or [], offset) if wanted and logprobs is not None else None)
        body = Completion.model_construct(id=completion_id, object="text_completion", created=created,
                                          model=prepared.model, choices=[choice] if usage is None else [],
                                          usage=usage)
        return f"data: {body.model_dump_json(exclude_none=True)}\n\n"

    async for delta in _events(engine, prepared):
        if isinstance(delta, str):
            yield delta
            return
        if delta.text or delta.finish_reason:
            yield chunk(delta.text, delta.finish_reason, delta.logprobs or [])
            offset += len(delta.text)
        if delta.finish_reason and include_usage:
            yield chunk("", usage=_usage(delta, prepared))
    yield "data: [DONE]\n\n"
