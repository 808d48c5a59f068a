# sedsft -- `make demo` sets up and runs the CPU demo; `make test` sets up and runs the tests.
# Both create (or reuse) the virtual environment .venv with every extra (EXTRAS: the command line, the
# evaluation and the tests; `pip install sedsft` alone is the lean core, docs/dependencies.md).
# torch is installed first and pinned: on these machines `torch==2.13.0` is the CPU build, while an
# unpinned torch pulls several GB of CUDA wheels.
# On a GPU machine: make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= all,test
STAMP := $(VENV)/.sedsft-installed

export HF_HUB_OFFLINE := 1

.PHONY: setup demo demo-quick test selfcheck bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: setup
	$(BIN)/sedsft demo $(ARGS)

demo-quick: setup
	$(BIN)/sedsft demo --quick $(ARGS)

test: setup
	$(BIN)/python -m pytest -q $(ARGS)

selfcheck: setup
	$(BIN)/sedsft selfcheck

bench: setup
	$(BIN)/python benchmarks/benchmark_fused_linear.py --shapes small

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
