"""Child processes that end with their parent, however the parent ends.

A parent starts each child with ``spawn``: the child gets its own process group (a signal to the
group also reaches the workers it forks) and learns its parent's pid from ``LIMA_PARENT_PID``.
``stop_all`` ends every child still running (SIGTERM to its group, SIGKILL if it lingers past a
few seconds, so a parent told to stop is gone within about ten even on a busy machine);
``signals_exit`` turns SIGTERM and SIGHUP (what systemd, Docker and a closing terminal send), and
optionally SIGINT, into ``SystemExit``, so the parent's ``finally`` blocks, and so ``stop_all``, run.

A parent killed with SIGKILL runs nothing; its children call ``exit_with_parent`` at start, which
watches the parent and sends the child SIGTERM when it is gone, so the child's own clean shutdown
runs within a second or two.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

PARENT_ENV = "LIMA_PARENT_PID"
CLI = "studio.cli"  # the `lima` command's module, run as `python -m`
_children: list[subprocess.Popen] = []
_lock = threading.Lock()


def lima_command(*args: str) -> list[str]:
    """The command line of ``lima ARGS...`` with this interpreter (the environment's own `lima`)."""
    return [sys.executable, "-m", CLI, *args]


def spawn(cmd: list[str], env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """Start ``cmd`` as a child of this process, in its own process group, remembered for ``stop_all``."""
    environment = {**(os.environ if env is None else env), PARENT_ENV: str(os.getpid())}
    process = subprocess.Popen(cmd, env=environment, start_new_session=True, **popen)
    with _lock:
        _children.append(process)
    return process


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the child's process group; SIGKILL it if it has not ended after ``timeout`` seconds."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass
    with _lock:
        if process in _children:
            _children.remove(process)


# How long children get to end on SIGTERM before SIGKILL. A service ends in about 2 s (4 s with two
# busy processes beside it, measured); a training run ends at its next step, which on a CPU may be
# longer: it is then killed, and its record says so (``runs.close_vanished``).
STOP_GRACE_S = 6.0


def stop_all(timeout: float = STOP_GRACE_S) -> list[int]:
    """Stop every child ``spawn`` started that is still running: all asked at once, then waited for.
    Returns the pids of those that had to be killed."""
    with _lock:
        running = [p for p in _children if p.poll() is None]
    for process in running:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    killed = []
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed.append(process.pid)
        stop(process, timeout=0.1)
    return killed


def _exit(signum, _frame):
    raise SystemExit(128 + signum)


def signals_exit(interrupt: bool = False) -> None:
    """SIGTERM and SIGHUP (and SIGINT with ``interrupt``) raise SystemExit (exit status 128 + the
    signal) in the main thread, so cleanup in ``finally`` runs. Without ``interrupt`` SIGINT keeps
    Python's KeyboardInterrupt, which does the same unless a library catches it on its own way out."""
    for signum in (signal.SIGTERM, signal.SIGHUP, *([signal.SIGINT] if interrupt else [])):
        signal.signal(signum, _exit)


def exit_with_parent(interval: float = 0.5) -> None:
    """In a child started by ``spawn``: SIGTERM this process once the parent is gone (a parent that
    was SIGKILLed never stops its children; the orphan is re-parented, so ``getppid`` changes)."""
    parent = os.environ.pop(PARENT_ENV, None)  # this process's own children must not read it as theirs
    if not parent or not parent.isdigit():
        return
    parent_pid = int(parent)

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="lima-lifeline", daemon=True).start()
