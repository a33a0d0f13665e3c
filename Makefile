# Newcomer entry points (see README). Everything installs into ./.venv.
VENV ?= .venv
PY := $(VENV)/bin/python
WORK ?= work_dirs

.PHONY: setup demo serve test test-learning test-slow test-gpu test-gpu-rehearsal gpu-kit bench-prepare bench-train bench-serve clean

setup: $(VENV)/.installed

# torch is installed first, pinned: on a CPU-only machine point pip at the CPU wheel index
# (PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu) to avoid the CUDA wheels.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# The main job on the embedded default: `iblip run` (configs/workflow.yaml) generates the sample world,
# prepares it with Ray Data on a local Ray, tunes the tiny InstructBLIP with Ray Train + DeepSpeed
# ZeRO-2, evaluates it on the 13 held-out sets, registers it as instructblip@champion in ./mlflow.db.
# Running it again skips every unchanged step.
demo: setup
	$(VENV)/bin/iblip run --config configs/workflow.yaml work_dir=$(WORK)/workflow

# Serve the registered model (after `make demo`; or `iblip run --serve` does both) on http://127.0.0.1:8000 until Ctrl-C.
serve: setup
	$(VENV)/bin/iblip serve

test: setup
	$(PY) -m pytest -q

# The default `iblip train` end to end on a fresh sample world (minutes; issue 4's proof that it learns).
test-learning: setup
	$(PY) -m pytest -q -s -m learning

# Real-process checks kept out of the 10-minute suite (stopping `iblip serve` mid-deploy, a two-node
# HAProxy refusal); CI runs them after it.
test-slow: setup
	$(PY) -m pytest -q -m slow

# The GPU code paths (bf16, NCCL, ZeRO-2/3 on one GPU, serving and evaluation on it); needs a CUDA GPU.
test-gpu: setup
	$(PY) -m pytest -q -m gpu

# The same tests with CPU expectations, to check them where no GPU is (minutes).
test-gpu-rehearsal: setup
	IBLIP_GPU_TESTS_ON_CPU=1 $(PY) -m pytest -q -m gpu

# The GPU checks' kit for a GPU machine that has CUDA PyTorch but no package index: the packages it
# lacks (CPython 3.12 wheels at this environment's versions) and the small world, in .gpu-kit/;
# tests/device/run_checks.sh runs the checks there (see README, "GPU checks on a machine without network").
gpu-kit: setup
	$(PY) tests/device/build_kit.py

bench-prepare: setup
	$(PY) benchmarks/prepare.py

bench-train: setup
	$(PY) benchmarks/train_step.py

bench-serve: setup
	$(PY) benchmarks/serve.py

clean:
	rm -rf $(WORK)
