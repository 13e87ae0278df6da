"""The one client to the service: the OpenAI protocol, spoken with the ``openai`` client, and the
admin routes (load a model, sleep, wake) with the same bearer key.

Every caller that talks to a `lima serve` (the UI, training handing over its new model, the
experiment, the benches) goes through ``ServiceClient``, so a password-protected service's key is
never dropped. Errors come back as ``ServiceProblem`` with a sentence for the person at the screen:
the service is down, the model has vanished, the model is retraining, the request was refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai

SERVICE = "lima-studio"  # what a LIMA Studio service's /health says it is, so no client trusts another


class ServiceProblem(Exception):
    """Something the UI shows as a warning; ``kind`` is down | gone | loading (the model is still
    warming up) | busy (retraining) | refused."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class StreamEvent:
    text: str = ""
    done: bool = False
    waiting: str = ""  # the service is still loading the model: what it said, while the client waits
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    first_token_ms: float | None = None
    latency_ms: float | None = None


class ServiceClient:
    """``http_client``: an httpx client to speak through (tests pass the app's in-process client)."""

    def __init__(self, base_url: str, api_key: str | None = None, http_client: httpx.Client | None = None):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or "unused"
        self.http = http_client
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = openai.OpenAI(base_url=self.base_url + "/v1", api_key=self.api_key, max_retries=0,
                                    timeout=httpx.Timeout(600, connect=5), http_client=http_client)

    def health(self) -> dict:
        """The service's ``/health`` answer, also while it warms up (when it answers 503 with the
        models still loading and their stages)."""
        try:
            response = (self.http or httpx).get(self.base_url + "/health", timeout=5)
            return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ServiceProblem("down", f"The chat service at {self.base_url} is not reachable. "
                                         "Is `lima serve` running?") from exc

    def admin(self, method: str, route: str, timeout: float, body: dict | None = None) -> dict:
        """An admin route (``/admin/...``) with the key; its JSON answer. A refusal is a
        ``ServiceProblem`` ("refused") with the service's own message."""
        try:
            response = (self.http or httpx).request(method, self.base_url + route, json=body,
                                                    headers=self.headers, timeout=timeout)
        except httpx.HTTPError as exc:
            raise ServiceProblem("down", f"The chat service at {self.base_url} could not be reached ({exc}).") from exc
        if response.status_code != 200:
            try:
                error = response.json().get("error", {})
                message = error.get("message") if isinstance(error, dict) else str(error)
            except ValueError:
                message = response.text[:300]
            raise ServiceProblem("busy" if response.status_code == 503 else "refused",
                                 f"HTTP {response.status_code}: {message or response.text[:300]}")
        return response.json()

    def load_model(self, name: str, path: str, timeout: float = 900) -> dict:
        """Serve ``path`` as ``name`` (add, or replace once the new weights have loaded)."""
        return self.admin("POST", "/admin/models", timeout, {"name": name, "path": path})

    def sleep(self, timeout: float = 300) -> None:
        """Free the accelerator for a training run; chat requests wait with a 503 until ``wake``."""
        self.admin("POST", "/admin/sleep", timeout)

    def wake(self, timeout: float = 900) -> None:
        self.admin("POST", "/admin/wake", timeout)

    def models(self) -> list[str]:
        try:
            return [m.id for m in self.client.models.list().data]
        except openai.APIConnectionError as exc:
            raise ServiceProblem("down", f"The chat service at {self.base_url} is not reachable. "
                                         "Is `lima serve` running?") from exc

    def stream(self, model: str, messages: list[dict[str, str]], wait_loading: float = 0,
               **params) -> Iterator[StreamEvent]:
        """Text pieces as they come, then one event with ``done`` and the usage and timings.

        ``wait_loading``: for up to that many seconds, a model the service is still loading is
        waited for (an event with ``waiting`` says so every second) instead of refused."""
        deadline = time.monotonic() + wait_loading
        while True:
            try:
                yield from self._stream(model, messages, **params)
                return
            except ServiceProblem as problem:
                if problem.kind != "loading" or time.monotonic() >= deadline:
                    raise
                yield StreamEvent(waiting=str(problem))
                time.sleep(1)

    def _stream(self, model: str, messages: list[dict[str, str]], **params) -> Iterator[StreamEvent]:
        extra = {k: params.pop(k) for k in ("repetition_penalty", "top_k") if params.get(k) is not None}
        start = time.perf_counter()
        first = None
        usage = finish = None
        try:
            stream = self.client.chat.completions.create(
                model=model, messages=messages, stream=True, stream_options={"include_usage": True},
                extra_body=extra or None, **{k: v for k, v in params.items() if v is not None})
            for chunk in stream:
                if chunk.usage:
                    usage = chunk.usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                finish = choice.finish_reason or finish
                if choice.delta and choice.delta.content:
                    first = first or time.perf_counter()
                    yield StreamEvent(text=choice.delta.content)
        except openai.APIConnectionError as exc:
            raise ServiceProblem("down", f"The chat service at {self.base_url} stopped answering.") from exc
        except openai.NotFoundError as exc:
            raise ServiceProblem("gone", _message(exc)) from exc
        except openai.APIStatusError as exc:
            kind = ("loading" if exc.code == "model_warming_up" else "busy" if exc.status_code == 503
                    else "refused")
            raise ServiceProblem(kind, _message(exc)) from exc
        except openai.APIError as exc:  # an error event inside the stream
            raise ServiceProblem("refused", str(exc.message)) from exc
        end = time.perf_counter()
        yield StreamEvent(done=True, finish_reason=finish,
                          prompt_tokens=usage.prompt_tokens if usage else None,
                          completion_tokens=usage.completion_tokens if usage else None,
                          first_token_ms=round((first - start) * 1000, 1) if first else None,
                          latency_ms=round((end - start) * 1000, 1))


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
    return str(error.get("message") or exc.message)
