# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   -> creates .venv, installs geospade, runs `geospade demo`
#   make test   -> creates .venv, installs geospade[dev], runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo-output

.PHONY: demo test install lint clean

$(BIN)/geospade: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

install: $(BIN)/geospade

demo: install
	$(BIN)/geospade demo -o $(DEMO_OUT)

test: install
	$(BIN)/python -m pytest -q tests

lint: install
	$(BIN)/ruff check geospade tests benchmarks examples

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info
