"""Start the real `lima serve` on a free port and wait until it answers; wait for a URL to answer."""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from lima.hosts import free_port  # noqa: F401 - the tests' free ports come from here
from lima import service_child


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    process.kill()
    raise RuntimeError(f"server did not answer {url} in {timeout}s:\n{log.read_text()[-3000:]}")


@contextmanager
def serving(serve_args: list[str], log: Path, env: dict | None = None, timeout: float = 600,
            api_key: str | None = None):
    """`lima serve SERVE_ARGS` on a free port through the product's own starter
    (``lima.service_child``), once every model has loaded; yields its base URL."""
    service = service_child.start(serve_args, log=log, until="loaded", timeout=timeout, api_key=api_key,
                                  env={**os.environ, **(env or {})})
    try:
        yield service.url
    finally:
        service.stop()
