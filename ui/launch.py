"""Run the product: the chat service on the embedded default and the workbench UI.

    lima up [--host 127.0.0.1] [--port 7860] [--engine transformers|vllm] [--service-url URL] [--password PW]

Starts `lima serve` as a child on --service-port (on another free port, said so, when that one is
taken), checks that what answers there is that very child, then serves the UI at once and prints
its URL; the page says "warming up" while the models load. With --service-url it uses a running
service instead, once it has checked that it is a LIMA Studio service.

Bound to localhost unless told otherwise; with a password (or LIMA_PASSWORD) every visitor logs in,
and the login name is recorded as the rater. With a password, or a host other than loopback, the
service requires a key: one is generated for this session unless --api-key (or LIMA_API_KEY) gives
one. SIGTERM, SIGINT and SIGHUP stop the service and any training run started from the page; if
`lima up` is killed outright (SIGKILL), they notice within a second and stop themselves. Extra
`lima serve` options pass through after `--`.
"""

from __future__ import annotations

import argparse
import os
import secrets

from lima import children, service_child
from lima.hosts import free_port, is_loopback, port_free
from lima.service_client import SERVICE, ServiceClient, ServiceProblem
from lima.store import chatlog, connect, runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface for the UI (default: localhost only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--service-url", default=os.environ.get("LIMA_SERVICE_URL"),
                        help="use this running LIMA Studio service instead of starting one")
    parser.add_argument("--service-port", type=int, default=8000,
                        help="port for the service `up` starts (another free one if it is taken)")
    parser.add_argument("--engine", choices=["transformers", "vllm"], default=os.environ.get("LIMA_ENGINE"),
                        help="the service's engine (default: transformers; vllm on a GPU)")
    parser.add_argument("--base-model", default=os.environ.get("LIMA_BASE_MODEL"),
                        help="what the service serves as `base` (default: the embedded model)")
    parser.add_argument("--password", default=os.environ.get("LIMA_PASSWORD"), help="require a login")
    parser.add_argument("--api-key", default=os.environ.get("LIMA_API_KEY"),
                        help="the service's bearer key (generated for the session when a password or a "
                             "non-loopback host needs one)")
    parser.add_argument("serve_args", nargs="*", help="options passed to `lima serve` (after --)")


class Refused(SystemExit):
    def __init__(self, reason: str):
        super().__init__(f"lima up: {reason}")


def service_port(wanted: int) -> int:
    """``wanted`` if nothing listens there; otherwise a free port, said so: a service already on
    ``wanted`` may be a stale one from an earlier run, and its answers are not this session's."""
    if port_free(wanted):
        return wanted
    port = free_port()
    print(f"lima up: port {wanted} is taken by another program; the service uses port {port} "
          "(use --service-url to talk to a service that is already running)", flush=True)
    return port


def start_service(port: int, serve_args: list[str], api_key: str | None = None) -> str:
    """`lima serve` as a child on ``port`` (``lima.service_child``), returned once its own /health
    answers: it answers while its models still load, and the page says so. Its output goes to this
    terminal, where the first run's progress shows. Returns its URL."""
    try:
        return service_child.start(serve_args, port, api_key, timeout=120).url
    except service_child.ServiceStartError as exc:
        raise Refused(str(exc)) from None


def check_service(url: str, api_key: str | None) -> None:
    """--service-url must be a LIMA Studio service: the UI writes its replies into this workbench's log."""
    try:
        health = ServiceClient(url, api_key).health()
    except ServiceProblem as problem:
        raise Refused(str(problem)) from None
    if health.get("service") != SERVICE:
        raise Refused(f"{url} answers /health but is not a LIMA Studio service (start one with `lima serve`, "
                      "or leave out --service-url to let `lima up` start its own)")


def session_key(args) -> str | None:
    """The service's key: the one given, or a fresh one when a password or an exposed UI needs it."""
    if args.api_key:
        return args.api_key
    if args.password or not is_loopback(args.host):
        return secrets.token_urlsafe(32)
    return None


def main(args) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from ui.app import CSS, JS, build_app

    # SIGTERM, SIGHUP and SIGINT all run the `finally` below at once: left to Gradio, Ctrl+C would
    # first close the web server (up to 5 s) and only then stop the children.
    children.signals_exit(interrupt=True)
    interrupted = chatlog.mark_interrupted(connect())
    if interrupted:
        print(f"{interrupted} reply(ies) were cut short by an earlier stop; their text is kept, marked interrupted")
    url = args.service_url
    api_key = args.api_key
    try:
        if url:
            check_service(url, api_key)
        else:
            api_key = session_key(args)
            if api_key and not args.api_key:
                print("lima up: the service requires a key (a password or a non-loopback host is set); "
                      "generated one for this session", flush=True)
            serve_args = list(args.serve_args)
            if args.engine:
                serve_args += ["--engine", args.engine]
            if args.base_model:
                serve_args += ["--base-model", args.base_model]
            url = start_service(service_port(args.service_port), serve_args, api_key)
        auth = (lambda user, password: bool(user) and password == args.password) if args.password else None
        app = build_app(url, api_key)
        app.queue(default_concurrency_limit=16)
        print(f"LIMA Studio: http://{args.host}:{args.port} (service {url})", flush=True)
        app.launch(server_name=args.host, server_port=args.port, auth=auth, ssr_mode=False, quiet=True,
                   css=CSS, js=JS, auth_message="LIMA Studio: your login name is recorded with your ratings")
    finally:
        killed = children.stop_all()  # the service, and a training run started from the page
        stopped = runs.close_vanished(connect(), "cancelled", "cancelled: the workbench stopped before the run "
                                      "reached its next step (the step in progress was not saved)", pids=killed)
        if stopped:
            print(f"lima up: training run {', '.join(stopped)} stopped with the workbench", flush=True)
    return 0
