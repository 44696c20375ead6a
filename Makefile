# mia_ray developer entry points. `make test` and `make quickstart` work from a fresh clone.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
RAY ?= ray[tune,data]==2.58.0
export RAY_DATA_DISABLE_PROGRESS_BARS ?= 1

.PHONY: venv test lint quickstart bench clean

$(BIN)/activate:
	$(PY) -m venv $(VENV)

# CPU torch first, from PyTorch's CPU index: PyPI's Linux torch wheels are CUDA builds (torch==2.13.0 from PyPI
# pulls cuda-toolkit, cuDNN and NCCL wheels, several GB). An extra index, so pip still finds torch where that index
# cannot be reached (it then takes PyPI's build; a local +cpu wheel wins); `make TORCH_INDEX=` skips it. --no-deps:
# one look-up there; torch's own dependencies come with the package below. --retries 1 --timeout 20: an index that
# cannot be reached costs seconds, not pip's default 5 retries of a 15 s (here 180 s) timeout. Then the Ray version the project is
# tested with (cluster/aws.yaml pins the same), then the package with its test extra.
$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-deps $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX) --retries 1 --timeout 20) "$(TORCH)"
	$(BIN)/pip install -q "$(RAY)"
	$(BIN)/pip install -q -e ".[test,bench]"
	touch $@

venv: $(VENV)/.installed

# Two pytest-xdist workers, one test file each at a time (module fixtures are shared within a file): the serial
# suite kept only ~1.1 of 2 cores busy (10 min 55 s wall for 7 min 35 s of CPU). TEST_WORKERS=0 runs it serially.
TEST_WORKERS ?= 2
test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

lint: venv
	$(BIN)/ruff check .

quickstart: venv
	$(BIN)/python -m mia_ray.sweep sweeps/quickstart.yaml

bench: venv
	$(BIN)/python benchmarks/attacks.py --quick
	$(BIN)/python benchmarks/scoring.py
	$(BIN)/python benchmarks/scaling.py
	$(BIN)/python benchmarks/rows.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
