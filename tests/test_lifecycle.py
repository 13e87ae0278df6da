"""`lima up` and `lima serve` as a service manager sees them: signals stop every child, a parent
killed outright leaves no orphan, a port is never shared with a stranger, and a workbench that is
reachable by others has no door without a key."""

from __future__ import annotations

import http.server
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.server import free_port
from lima.children import lima_command


def product_processes(home: Path) -> list[int]:
    """Every live process started for this LIMA_HOME: each one inherits it in its environment."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"LIMA_HOME={home}".encode() in environ and state != "Z":
            found.append(int(entry.name))
    return found


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Up:
    """`lima up` in its own session, as a terminal or systemd would run it."""

    def __init__(self, home: Path, tiny_base: Path, *args: str, service_port: int | None = None):
        self.home, self.port = home, free_port()
        self.service_port = service_port or free_port()
        self.log = home / "up.log"
        home.mkdir(parents=True, exist_ok=True)
        cmd = [*lima_command(), "up", "--port", str(self.port), "--service-port",
               str(self.service_port), *args, "--", "--no-registry", "--quantize", "none",
               "--model", f"base={tiny_base}"]
        env = {**os.environ, "LIMA_HOME": str(home), "GRADIO_ANALYTICS_ENABLED": "False"}
        env.pop("LIMA_API_KEY", None)
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> str:
        """The service URL `lima up` printed once its UI was up."""
        def printed():
            assert self.process.poll() is None, f"lima up exited early:\n{self.text()[-3000:]}"
            found = re.search(r"LIMA Studio: http://\S+ \(service (\S+)\)", self.text())
            return found.group(1) if found else None

        url = wait_until(printed, timeout, "lima up to print its URL")
        wait_until(lambda: _status(url) == 200, timeout, "the service's models to load")
        return url

    def close(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in product_processes(self.home):
            os.kill(pid, signal.SIGKILL)


def _status(url: str) -> int | None:
    try:
        return httpx.get(url + "/health", timeout=2).status_code
    except httpx.HTTPError:
        return None


@pytest.fixture
def up(tmp_path, tiny_base):
    started = []

    def start(*args, **kw) -> Up:
        started.append(Up(tmp_path / f"home-{len(started)}", tiny_base, *args, **kw))
        return started[-1]

    yield start
    for each in started:
        each.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_to_lima_up_leaves_no_process_behind(up, signum):
    studio = up()
    url = studio.wait_ready()
    service_pid = httpx.get(url + "/health").json()["pid"]
    assert service_pid in product_processes(studio.home) and service_pid != studio.process.pid
    studio.process.send_signal(signum)  # to `lima up` alone, as `systemctl stop` or `kill` does
    # A generous limit for a busy machine: it ends in about 3 s here, 4 s beside two busy processes.
    studio.process.wait(120)
    # `lima up` itself ran its cleanup (it exited, it was not killed by the signal) and had stopped
    # its service before exiting: the service's own lifeline, a second later, is not what ended it
    assert studio.process.returncode >= 0, studio.text()[-2000:]
    assert product_processes(studio.home) == []
    assert _status(url) is None  # and nobody answers on the service port any more


def test_a_service_whose_parent_is_killed_outright_stops_itself(up):
    studio = up()
    url = studio.wait_ready()
    service_pid = httpx.get(url + "/health").json()["pid"]
    os.kill(studio.process.pid, signal.SIGKILL)  # `lima up` runs no cleanup at all
    studio.process.wait(10)
    wait_until(lambda: not product_processes(studio.home), 120, f"the orphaned service {service_pid} to exit")


def test_a_child_that_outstays_the_stop_is_killed_and_its_run_recorded_as_cancelled(lima_home, monkeypatch):
    """`lima up` stopping gives its children a few seconds: a training run in the middle of a long
    step does not hold it up. It is killed, and its run record says why instead of 'running'."""
    import sys

    from lima import children
    from lima.store import connect, runs

    monkeypatch.setattr(children, "_children", [])  # this test's children only, not the session's services
    stubborn = children.spawn([sys.executable, "-c", "import signal, time\n"
                               "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
                               "time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    polite = children.spawn([sys.executable, "-c", "import time; time.sleep(600)"])
    assert stubborn.stdout.readline().strip() == "ready"  # its SIGTERM handler is in place
    db = connect()
    runs.start(db, "run-stubborn", variant="dialogue", preset="cpu-demo", pid=stubborn.pid)
    assert children.stop_all(timeout=2) == [stubborn.pid]  # the polite one ended on SIGTERM
    assert stubborn.poll() is not None and polite.poll() is not None
    assert runs.close_vanished(db, "cancelled", "stopped with the workbench", pids=[stubborn.pid]) == ["run-stubborn"]
    record = runs.get(db, "run-stubborn")
    assert record.status == "cancelled" and record.error == "stopped with the workbench"


class _Stranger(http.server.BaseHTTPRequestHandler):
    """Something else on the port, answering /health the way a service would."""
    asked: list[str] = []

    def do_GET(self):
        _Stranger.asked.append(self.path)
        body = b'{"status": "ok", "models": ["base"], "pid": 1}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def stranger():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stranger)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Stranger.asked.clear()
    yield server.server_address[1]
    server.shutdown()


def test_lima_up_never_attaches_to_a_service_it_did_not_start(up, stranger):
    studio = up(service_port=stranger)
    url = studio.wait_ready()
    assert f"port {stranger} is taken" in studio.text()
    assert not url.endswith(f":{stranger}") and _Stranger.asked == []
    service_pid = httpx.get(url + "/health").json()["pid"]
    assert service_pid in product_processes(studio.home)


def test_service_url_must_be_a_lima_studio_service(tmp_path, stranger):
    result = subprocess.run([*lima_command(), "up", "--port", str(free_port()),
                             "--service-url", f"http://127.0.0.1:{stranger}"],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "LIMA_HOME": str(tmp_path / "home")})
    assert result.returncode == 1
    assert "is not a LIMA Studio service" in result.stderr
    assert _Stranger.asked == ["/health"]


def test_a_password_protected_workbench_has_no_unauthenticated_door(up, tmp_path):
    studio = up("--password", "pw")
    url = studio.wait_ready()
    assert "generated one for this session" in studio.text()
    for method, path, body in (("POST", "/admin/models", {"name": "x", "path": str(tmp_path)}),
                               ("DELETE", "/admin/models/base", None), ("POST", "/admin/sleep", None),
                               ("GET", "/v1/models", None),
                               ("POST", "/v1/chat/completions",
                                {"model": "base", "messages": [{"role": "user", "content": "hi"}]})):
        response = httpx.request(method, url + path, json=body, timeout=30)
        assert response.status_code == 401, (method, path, response.text)
    # the key is nowhere a local user could read it off a command line
    commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in product_processes(studio.home)]
    assert commands and not any(b"--api-key" in c for c in commands)
    assert httpx.get(url + "/health").json()["models"] == ["base"]  # and the model is still served


def test_serve_on_a_network_address_needs_a_key(tiny_base):
    cmd = [*lima_command(), "serve", "--host", "0.0.0.0", "--port", str(free_port()),
           "--no-registry", "--quantize", "none", "--model", f"base={tiny_base}"]
    env = {k: v for k, v in os.environ.items() if k != "LIMA_API_KEY"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2
    assert "--host 0.0.0.0" in result.stderr and "--api-key" in result.stderr and "--insecure" in result.stderr
    # --insecure says "I know": it starts (and stops on SIGTERM)
    process = subprocess.Popen([*cmd, "--insecure"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        port = cmd[cmd.index("--port") + 1]
        wait_until(lambda: _status(f"http://127.0.0.1:{port}") == 200, 120, "the insecure service")
    finally:
        process.terminate()
        assert process.wait(30) is not None


def test_serve_answers_at_once_and_says_what_it_is_loading(tmp_path, tiny_base):
    """The first run's progress: /health answers 503 with each model's stage while loading, the
    console shows a progress bar naming the stage, and then the service says it is ready."""
    port = free_port()
    log = tmp_path / "serve.log"
    cmd = [*lima_command(), "serve", "--port", str(port), "--no-registry", "--quantize", "fp16",
           "--model", f"base={tiny_base}"]
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "LIMA_HOME": str(tmp_path / "home")})
    try:
        answers = []

        def loaded():
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            except httpx.HTTPError:
                return False
            answers.append((response.status_code, response.json()))
            return response.status_code == 200

        wait_until(loaded, 180, "the service to load")
        loading = [body for status, body in answers if status == 503]
        assert loading, "the service answered only once everything had loaded"
        assert all(body["status"] == "loading" and "base" in body["loading"] for body in loading)
        assert answers[-1][1]["models"] == ["base"] and answers[-1][1]["loading"] == {}
        text = log.read_text(errors="replace")
        assert "base: loading the weights" in text and "base: compiling the decoder" in text
        assert "LIMA Studio service ready: serving base" in text
    finally:
        process.terminate()
        process.wait(30)
