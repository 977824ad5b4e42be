# Two commands on a fresh machine:  make demo  |  make test
# Both create ./.venv (Python >= 3.10) and install retinasynth into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: demo test test-slow lint install clean

$(BIN)/retinasynth: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/retinasynth

demo: install
	$(BIN)/retinasynth demo $(ARGS)

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check retinasynth cli tests benchmarks

clean:
	rm -rf $(VENV) *.egg-info
