"""The one way to start a `lima serve` child and wait for it: `lima up`, `lima experiment`, the
benches and the tests all start their service here.

``start`` runs ``lima serve`` on a port (a free one unless given) as a child that ends with its
parent (``lima.children``), with the bearer key in its environment (where `ps` does not show it),
and returns once the service's own ``/health`` answers: as soon as it listens (``until="listening"``:
it answers 503 while its models load, with their stages) or once every model has loaded or failed
(``until="loaded"``; ``/health`` names the failures). It trusts only its own child: a ``/health`` that reports another pid means
something else holds the port, and it stops there.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lima import children
from lima.hosts import free_port
from lima.service_client import ServiceClient, ServiceProblem


class ServiceStartError(RuntimeError):
    """The service did not come up; the message says why and where its output went."""


@dataclass
class ServiceChild:
    process: subprocess.Popen
    url: str
    client: ServiceClient
    log: Path | None = None

    def stop(self, timeout: float = 20) -> None:
        children.stop(self.process, timeout)


def start(serve_args: list[str], port: int | None = None, api_key: str | None = None, log: Path | None = None,
          until: str = "listening", timeout: float = 180, env: dict[str, str] | None = None,
          host: str = "127.0.0.1") -> ServiceChild:
    """`lima serve SERVE_ARGS` on ``port``; its output goes to ``log`` (else to this terminal, where a
    first run's progress shows). ``env`` replaces this process's environment for it."""
    assert until in ("listening", "loaded"), until
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    environment = {k: v for k, v in (os.environ if env is None else env).items() if k != "LIMA_API_KEY"}
    if api_key:
        environment["LIMA_API_KEY"] = api_key
    cmd = children.lima_command("serve", "--host", host, "--port", str(port), *serve_args)
    out = open(log, "wb") if log else None
    try:
        process = children.spawn(cmd, env=environment, stdout=out, stderr=subprocess.STDOUT if out else None)
    finally:
        if out:
            out.close()  # the child holds its own copy
    child = ServiceChild(process, url, ServiceClient(url, api_key), log)
    where = f"; see {log}" if log else ""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ServiceStartError(f"the chat service exited with code {process.returncode}{where}")
        try:
            health = child.client.health()
        except ServiceProblem:
            health = None
        if health is not None:
            if health.get("pid") != process.pid:
                child.stop()
                raise ServiceStartError(f"something other than the service this process started answers on port "
                                        f"{port} (pid {health.get('pid')}, not {process.pid}); not using it")
            if until == "listening" or health.get("status") != "loading":
                return child
        if time.monotonic() > deadline:
            child.stop()
            what = "answer" if until == "listening" else "load its models"
            raise ServiceStartError(f"the chat service did not {what} on port {port} within {timeout:.0f} s{where}")
        time.sleep(0.25)
