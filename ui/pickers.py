"""The model and conversation lists the Chat and Compare tabs offer, read when they open."""

from __future__ import annotations

import gradio as gr

from lima.service_client import ServiceClient, ServiceProblem
from lima.store import chatlog, connect
from lima.store.registry import warnings

LABEL_WARNING = 90  # characters of a model's warning shown in its list entry


def served_models(client: ServiceClient) -> list[str] | None:
    """The models the service lists now, or None (with a warning in the page) when it cannot say."""
    try:
        return client.models()
    except ServiceProblem as problem:
        gr.Warning(str(problem))
        return None


def first_model(client: ServiceClient) -> tuple[str, dict]:
    """The model a list of the served models shows first, and the dropdown update that shows it;
    while the service still loads every model, the first one it is loading (a message to it waits
    until it is in). Raises ``ServiceProblem`` when the service cannot say or serves none."""
    names = client.models()
    if names:
        return names[0], gr.update(choices=labelled(names), value=names[0])
    loading = list(client.health().get("loading") or {})
    if loading:
        return loading[0], gr.update(choices=[(f"{loading[0]} (loading)", loading[0])], value=loading[0])
    raise ServiceProblem("refused", "The service serves no model yet: load one with `lima serve --model NAME=PATH`.")


def pick(client: ServiceClient, model_name: str | None) -> tuple[str, dict]:
    """The model a message goes to: the one picked, else ``first_model`` (the page may not have
    filled its list yet), with the dropdown update that shows it (a skip when nothing changes)."""
    return (model_name, gr.skip()) if model_name else first_model(client)


def waiting_note(waiting: str) -> str:
    """The status line while a sent message waits for its model to load."""
    return f"⏳ {waiting.split(';')[0]}: your message is saved and is answered as soon as the model is in"


def labelled(names: list[str]) -> list[tuple[str, str]]:
    """(label, name) for a dropdown: a model its run found clearly worse than its parent says so."""
    worse = warnings(connect())

    def label(name: str) -> str:
        if name not in worse:
            return name
        text = worse[name]
        return f"{name} ⚠ {text[:LABEL_WARNING] + '…' if len(text) > LABEL_WARNING else text}"

    return [(label(n), n) for n in names]


def model_choices(client: ServiceClient, current: str | None, preferred: str | None = None):
    """A dropdown update: the served models, keeping ``current`` (else ``preferred``, else the first)."""
    names = served_models(client)
    if names is None:
        return gr.update()
    value = next((n for n in (current, preferred) if n in names), names[0] if names else None)
    return gr.update(choices=labelled(names), value=value)


def saved_conversations(sources: tuple[str, ...] = ("chat", "experiment"), limit: int = 30):
    """A dropdown update: the latest chats (and `lima experiment`'s conversations, to rate them
    beside the judge), newest first."""
    rows = chatlog.recent(connect(), limit, source=sources)
    return gr.update(choices=[(f"{r['updated'][:16]} · {r['model']} · {r['title'][:50]}"
                               + (" · experiment" if r["source"] == "experiment" else ""), r["id"]) for r in rows])
