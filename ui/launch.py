"""Run the product: the chat service on the embedded default and the workbench UI.

    lima up [--host 127.0.0.1] [--port 7860] [--engine transformers|vllm] [--service-url URL] [--password PW]

Starts `lima serve` as a child process (unless --service-url points at one already running),
waits until it answers, then serves the UI and prints its URL. Bound to localhost unless told
otherwise; with a password (or LIMA_PASSWORD) every visitor logs in, and the login name is
recorded as the rater. Extra `lima serve` options pass through after `--`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from lima.store import chatlog, connect


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface for the UI (default: localhost only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--service-url", default=os.environ.get("LIMA_SERVICE_URL"),
                        help="use this running service instead of starting one")
    parser.add_argument("--service-port", type=int, default=8000, help="port for the service `up` starts")
    parser.add_argument("--engine", choices=["transformers", "vllm"], default=os.environ.get("LIMA_ENGINE"),
                        help="the service's engine (default: transformers; vllm on a GPU)")
    parser.add_argument("--base-model", default=os.environ.get("LIMA_BASE_MODEL"),
                        help="what the service serves as `base` (default: the embedded model)")
    parser.add_argument("--password", default=os.environ.get("LIMA_PASSWORD"), help="require a login")
    parser.add_argument("--api-key", default=os.environ.get("LIMA_API_KEY"), help="the service's bearer key")
    parser.add_argument("serve_args", nargs="*", help="options passed to `lima serve` (after --)")


def start_service(port: int, serve_args: list[str], api_key: str | None = None,
                  log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """`lima serve` as a child on ``port``, once it answers; its output goes to ``log`` or this terminal
    (where the first run's model preparation shows its progress)."""
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "lima.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *serve_args]
    if api_key:
        cmd += ["--api-key", api_key]
    out = open(log, "wb") if log else None
    process = subprocess.Popen(cmd, start_new_session=True, stdout=out, stderr=subprocess.STDOUT if out else None)
    while True:
        if process.poll() is not None:
            raise SystemExit(f"lima up: the chat service exited with code {process.returncode}; see above")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)


def main(args) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from ui.app import build_app

    interrupted = chatlog.mark_interrupted(connect())
    if interrupted:
        print(f"{interrupted} reply(ies) were cut short by an earlier stop; their text is kept, marked interrupted")
    service = None
    url = args.service_url
    if not url:
        serve_args = list(args.serve_args)
        if args.engine:
            serve_args += ["--engine", args.engine]
        if args.base_model:
            serve_args += ["--base-model", args.base_model]
        service, url = start_service(args.service_port, serve_args, args.api_key)
    auth = (lambda user, password: bool(user) and password == args.password) if args.password else None
    try:
        app = build_app(url, args.api_key)
        app.queue(default_concurrency_limit=16)
        print(f"LIMA Studio: http://{args.host}:{args.port} (service {url})", flush=True)
        app.launch(server_name=args.host, server_port=args.port, auth=auth, ssr_mode=False, quiet=True,
                   auth_message="LIMA Studio: your login name is recorded with your ratings")
    finally:
        if service is not None and service.poll() is None:
            os.killpg(service.pid, signal.SIGTERM)
            try:
                service.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(service.pid, signal.SIGKILL)
    return 0
