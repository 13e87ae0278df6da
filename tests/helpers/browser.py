"""Headless Debian chromium driven by Playwright, and the real `lima up` on free ports."""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.helpers.server import free_port, wait_for
from lima.children import lima_command

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without these, chromium keeps trying to reach Google's hosts, which this network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


@contextmanager
def studio(home: Path, serve_args: list[str], env: dict | None = None, timeout: float = 240,
           up_args: tuple[str, ...] = ()):
    """`lima up` with its own service; yields the UI's URL."""
    port, service_port = free_port(), free_port()
    log = home / "up.log"
    cmd = [*lima_command(), "up", "--port", str(port), "--service-port", str(service_port),
           *up_args, "--", *serve_args]
    # The app's temp folder apart from LIMA_HOME, as for a person whose state is ~/.lima-studio:
    # Gradio serves files only from the working directory and the temp folder, and a test whose
    # state sits in the temp folder would not see a chart the page cannot show.
    app_tmp = home / "app-tmp"
    app_tmp.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "LIMA_HOME": str(home), "GRADIO_ANALYTICS_ENABLED": "False",
                   "TMPDIR": str(app_tmp), **(env or {})}
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=environment,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, process, log, timeout)
        yield url
    finally:
        with suppress(ProcessLookupError):  # a test may have killed it already
            os.killpg(process.pid, 15)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
