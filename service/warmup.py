"""The service's start: it answers HTTP at once and loads its models behind it.

A first run prepares the embedded model and compiles the decoder: a minute or more in which a
service that only listened afterwards looks dead. Instead ``/health`` says what is loading and at
which stage (503 until every start-up model is in, so probes and ``lima up`` can wait on it),
a request for a model still loading is told it is warming up, and the console shows a progress
bar whose clock keeps moving through the long stages.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable

from tqdm import tqdm

from lima.model_files import ModelLoadError


class Warmup:
    """Start-up models still loading (name: current stage) and the ones that failed (name: why)."""

    def __init__(self, names: list[str] | None = None, failures: dict[str, str] | None = None):
        self.stages: dict[str, str] = {name: "waiting" for name in names or []}
        self.failures: dict[str, str] = dict(failures or {})
        self.started = time.monotonic()
        self._lock = threading.Lock()

    @property
    def loading(self) -> bool:
        return bool(self.stages)

    def stage(self, name: str) -> str | None:
        return self.stages.get(name)

    def seconds(self) -> int:
        return int(time.monotonic() - self.started)

    def set_stage(self, name: str, stage: str) -> None:
        with self._lock:
            self.stages[name] = stage

    def finished(self, name: str, error: str | None = None) -> None:
        with self._lock:
            self.stages.pop(name, None)
            if error:
                self.failures[name] = error
            else:
                self.failures.pop(name, None)


async def load_all(warmup: Warmup, sources: dict[str, Callable[[], str]],
                   add: Callable[[str, str, Callable[[str], None]], Awaitable[object]],
                   on_error: Callable[[str, Exception], None]) -> None:
    """Load every model in ``sources`` (name: a function that returns its folder or hub id, which may
    first prepare it) with ``add(name, source, on_stage)``, one after another, showing a tqdm bar
    whose description is the current model and stage. A model that fails is recorded and skipped."""
    import asyncio

    bar = tqdm(total=len(sources), desc="Loading models", unit="model", dynamic_ncols=True)
    ticking = threading.Event()

    def tick():  # tqdm redraws only on update; this keeps the elapsed clock moving through a compile
        while not ticking.wait(1.0):
            bar.refresh()

    threading.Thread(target=tick, name="warmup-clock", daemon=True).start()
    try:
        for name, resolve in sources.items():
            def on_stage(stage: str, name=name) -> None:
                warmup.set_stage(name, stage)
                bar.set_description(f"{name}: {stage}")

            try:
                on_stage("preparing the files")
                source = await asyncio.to_thread(resolve)
                await add(name, source, on_stage)
            except (ModelLoadError, OSError, ValueError, RuntimeError) as exc:
                warmup.finished(name, str(exc))
                on_error(name, exc)
            else:
                warmup.finished(name)
            bar.update(1)
        bar.set_description("Models loaded" if not warmup.failures else "Models loaded (some failed)")
    finally:
        ticking.set()
        bar.close()
