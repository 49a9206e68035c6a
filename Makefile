# Every target sets itself up from a fresh machine (creates .venv, installs the package).
# The package is installed in *strict* editable mode so mypy sees calliope_graph.nodes and
# calliope_graph.graphs (mapped from nodes/ and graphs/); that mode needs a reinstall after a
# file is added, so every target reinstalls first (a few seconds when nothing changed).

PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
OUT    ?= out
# mypy runs the *installed* package from outside the repo root (mypy does not run the finder in
# calliope_graph/_layout.py that maps nodes/ and graphs/ when Python starts in the root).
MYPY   := cd / && $(BIN)/mypy --config-file $(CURDIR)/pyproject.toml --cache-dir $(CURDIR)/.mypy_cache

.PHONY: FORCE help install lint fmt typecheck test test-fast browser postgres otel-backend demo bench pictures schema clean

help:
	@echo "make demo   run the webcam story and two storyboards offline against the simulator"
	@echo "make test   install, lint, type-check and run the test suite"
	@echo "make lint   ruff check, ruff format --check, mypy --strict"
	@echo "make bench  benchmarks -> benchmarks/results.json"
	@echo "make pictures  regenerate the README's drawing and report screenshot"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(VENV)/bin/python
	$(BIN)/python -m pip install -q -e '.[test,dbos,postgres,serve,s3,otel]' --config-settings editable_mode=strict
	@echo '$(SOURCES)' > $(SOURCE_LIST) && touch $(DEMO_STAMP)

# `make demo` installs the package alone (no extras), and only when pyproject.toml or the set
# of files in calliope_graph/ nodes/ graphs/ changed since the last install (a strict editable
# install must be redone when a file is added): $(SOURCE_LIST) is rewritten only when that
# set changes, so make's usual timestamps decide. pip's output goes to a log, not the screen.
SOURCES     := $(sort $(shell find calliope_graph nodes graphs -type f -not -path '*/__pycache__/*' 2>/dev/null))
SOURCE_LIST := $(VENV)/.source-list
DEMO_STAMP  := $(VENV)/.installed

$(SOURCE_LIST): FORCE | $(VENV)/bin/python
	@echo '$(SOURCES)' | cmp -s - $@ || echo '$(SOURCES)' > $@

$(DEMO_STAMP): pyproject.toml $(SOURCE_LIST) | $(VENV)/bin/python
	@echo "installing calliope-graph into $(VENV) (log: $(VENV)/install.log)"
	@$(BIN)/python -m pip install -e . --config-settings editable_mode=strict \
		> $(VENV)/install.log 2>&1 || { tail -n 40 $(VENV)/install.log; exit 1; }
	@touch $@

FORCE:

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MYPY) --strict -p calliope_graph
	$(MYPY) --strict --allow-untyped-defs --allow-incomplete-defs \
		$(CURDIR)/tests $(CURDIR)/examples $(CURDIR)/benchmarks

typecheck: lint

fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Headless Chromium for the report tests: Debian's package, installed where we are root.
# Where it cannot be installed, only the browser tests skip (they say how to enable them).
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian chromium for the browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "warning: could not install chromium; browser tests will skip"; \
	else echo "note: chromium not found and not root; browser tests will skip (apt-get install chromium)"; fi
	@# Mermaid itself (JavaScript, not vendored) for the test that renders every drawing with it.
	@if [ ! -f node_modules/mermaid/dist/mermaid.min.js ] && command -v npm >/dev/null 2>&1; then \
		npm install --no-save --no-audit --no-fund --loglevel=error mermaid@11 >/dev/null \
		|| echo "warning: npm install mermaid failed; the Mermaid rendering test will skip"; fi

# PostgreSQL for the checkpoint and DBOS tests (the suite starts a throwaway cluster itself):
# Debian's package, installed where we are root. Elsewhere only those tests skip.
postgres:
	@if command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian postgresql for the checkpoint tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null) \
		|| echo "warning: could not install postgresql; the PostgreSQL tests will skip"; \
	else echo "note: PostgreSQL not found and not root; the PostgreSQL tests will skip (apt-get install postgresql)"; fi

# Arize Phoenix, a real OpenTelemetry (OTLP) backend the telemetry tests start on loopback and
# read spans back from: in its own venv (its dependencies pin tenacity below what we need).
# Where it cannot be installed, only that test skips (it says how to enable it).
otel-backend:
	@if [ ! -x .venv-phoenix/bin/phoenix ]; then \
		echo "installing Arize Phoenix (OTLP backend for the telemetry tests) in .venv-phoenix"; \
		($(PYTHON) -m venv .venv-phoenix && .venv-phoenix/bin/python -m pip install -q 'arize-phoenix>=12') \
		|| echo "warning: could not install arize-phoenix; the OTLP backend test will skip"; fi

test: lint browser postgres otel-backend
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -x -q

demo: $(DEMO_STAMP)
	$(BIN)/python examples/demo.py --out $(OUT)
	@echo ""
	@echo "Next: put calliope-graph on your PATH with   source $(VENV)/bin/activate"
	@echo "      (or call $(VENV)/bin/calliope-graph; or pip install -e . in an environment of your own)"
	@echo "then: calliope-graph run webcam_story --input image=examples/media/webcam.jpg --simulate -o $(OUT)/"

bench: install
	$(BIN)/python benchmarks/run.py --out benchmarks/results.json

pictures: install browser
	$(BIN)/python docs/make_pictures.py

schema: install
	$(BIN)/calliope-graph schema > calliope_graph/flow/flow.schema.json

clean:
	rm -rf $(OUT) build .mypy_cache .ruff_cache .pytest_cache
