# Two commands matter:  `make train` (set up, fetch MNIST, train the default config)
#                  and  `make test`  (set up, run the test suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# A local MNIST mirror next to the checkout (as on the project's offline build machines) is
# tried before the public mirrors; every file is verified by checksum whichever mirror serves it.
LOCAL_MNIST := $(abspath ../shared/data/mnist)
ifneq ($(wildcard $(LOCAL_MNIST)/train-images-idx3-ubyte.gz),)
export MLP_MNIST_MIRROR ?= file://$(LOCAL_MNIST)/
endif

.PHONY: setup train test lint docs bench bench-smoke clean

# setuptools announces every editable install with a warning banner ("Editable installation.
# Please be careful with folders ... named like your package"): information, not a problem, so
# that one message is filtered out (the build backend inherits PYTHONWARNINGS).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -e ".[dev,plot,dask,mlflow]"
	@touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(BIN)/mlp download-data
	$(BIN)/mlp train --config configs/default.yaml

# One BLAS thread per test process: the suite starts subprocesses side by side, and on a small
# machine multi-threaded BLAS calls stall badly when another process holds the other core.
# MLP_KERNELS=numpy: the suite's many short training processes run the numpy forms, without numba's
# import and compile (~0.7 s each where the fast extra is installed); tests/test_kernels.py asks
# for the compiled kernels itself and holds them bit-identical to these.
test: $(STAMP)
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MLP_KERNELS=numpy $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check mlp_cli tests benchmarks tools
	$(BIN)/mypy mlp_cli

# docs/cli.md, the command reference, from the commands (tests/test_docs.py fails when it is stale).
docs: $(STAMP)
	$(BIN)/python tools/cli_reference.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

bench-smoke: $(STAMP)
	$(BIN)/python -m benchmarks.run --smoke

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
