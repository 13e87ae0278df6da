"""What a training run asks of a running `lima serve`: the GPU while it trains, then to serve its model.

One GPU, two jobs: when the run trains on a GPU the service also uses, the service is put to sleep
(vLLM sleep mode: weights to host memory, KV cache freed; the transformers engine moves its models
to the CPU) and woken when the run ends, however it ends. Chat requests in between get a clear
"model is retraining" answer. With separate GPUs (CUDA_VISIBLE_DEVICES differs) nothing pauses.

Every call goes through ``lima.service_client.ServiceClient`` with the key from ``LIMA_API_KEY``
(the workbench hands its session key to its runs there), so a password-protected service accepts
the new model.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path

from lima.service_client import ServiceClient, ServiceProblem

log = logging.getLogger("lima.train")


def client(url: str) -> ServiceClient:
    """The service at ``url``, with the key this process was given (``LIMA_API_KEY``)."""
    return ServiceClient(url, os.environ.get("LIMA_API_KEY"))


def visible_gpus() -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "all")


def overlaps(theirs: str, ours: str) -> bool:
    """Do two CUDA_VISIBLE_DEVICES settings share a device? 'none' shares nothing, 'all' everything."""
    if "none" in (theirs, ours):
        return False
    if "all" in (theirs, ours):
        return True
    return bool(set(theirs.split(",")) & set(ours.split(",")))


def service_gpus(url: str) -> str | None:
    try:
        return client(url).health().get("gpus", "none")
    except ServiceProblem:
        return None


@contextmanager
def paused(url: str | None, mode: str, training_on_gpu: bool):
    """Sleep the service around the block when ``mode`` is 'always', or 'auto' and the GPU is shared."""
    should = False
    if url and mode != "never":
        theirs = service_gpus(url)
        should = mode == "always" or (training_on_gpu and theirs is not None
                                      and overlaps(theirs, visible_gpus()))
    if should:
        log.info("pausing the service at %s while training", url)
        client(url).sleep()
    try:
        yield should
    finally:
        if should:
            try:
                client(url).wake()
                log.info("the service at %s is serving again", url)
            except ServiceProblem as exc:  # the run's own outcome matters more; say what to do
                log.error("could not wake the service at %s (%s): restart `lima serve`", url, exc)


def notify(url: str, name: str, path: Path) -> str:
    """Ask the service to (re)load ``name`` from ``path``; a sentence about the outcome."""
    try:
        client(url).load_model(name, str(path))
    except ServiceProblem as problem:
        if problem.kind == "down":
            return f"registered; {problem} It will serve the model at its next start."
        return f"registered; the service at {url} refused it: {problem}"
    return f"now served as '{name}' by {url}"
