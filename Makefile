# The README's two set-up commands: `make up` (install, run the product) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up test install install-test browser

# CPU torch is pinned first: an unpinned torch would pull gigabytes of CUDA packages.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

up: install
	$(BIN)/lima up

# Debian's chromium drives the browser tests; Playwright's own browser download cannot work here.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

# Two workers, whole modules each, the longest first (tests/conftest.py): most tests wait on a
# server, a browser or a child process, so two share two cores well; more only contend. xdist
# would otherwise hand out the modules with the most tests first, and the one-test, six-minute
# retrain module last, alone on one worker.
test: install-test browser
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder
