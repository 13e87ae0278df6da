"""Start the real `lima serve` in a subprocess on a free port and wait until it answers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from lima.hosts import free_port  # noqa: F401 - the tests' free ports come from here


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
def running(args: list[str], health_path: str, log: Path, env: dict | None = None, timeout: float = 180):
    """Run ``python -m lima.cli <args> --port P``; yields the base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "lima.cli", *args, "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(base + health_path, process, log, timeout)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
