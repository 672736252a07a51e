# Two commands on a fresh machine: `make demo` and `make test`. Each creates or
# reuses .venv and installs what it needs (torch first, pinned to the CPU wheel).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test test-fast lint bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/medres demo

# The whole suite. The review app's real-browser test drives Debian's chromium where it is installed
# (.ci/run installs it) and is skipped, with the reason, where it is not.
test: $(STAMP)
	$(BIN)/python -m pytest -q

# The suite without the tests marked slow (training, the demo, notebooks, the browser, the wheel install).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo_output
