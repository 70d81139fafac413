# jaxwm: one-command set-up and runs. Each target creates .venv on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed   ## train + watermark + verify on the embedded digits (1-2 min on CPU)
	$(BIN)/python launch.py --config=configs/demo.py

test: $(VENV)/.installed   ## lint, then the whole test suite on the CPU
	$(BIN)/ruff check .
	JAX_PLATFORMS=cpu $(BIN)/python -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(VENV)/.installed  ## CPU smoke of the throughput benchmark (GPU figures: bench/README.md)
	JAX_PLATFORMS=cpu $(BIN)/python bench/train_throughput.py --model tiny --batch 64

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
