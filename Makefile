# Newcomer entry points (see README). Everything installs into ./.venv.
VENV ?= .venv
PY := $(VENV)/bin/python
WORK ?= work_dirs

.PHONY: setup demo serve test bench-prepare bench-train bench-serve clean

setup: $(VENV)/.installed

# torch is installed first, pinned: on a CPU-only machine point pip at the CPU wheel index
# (PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu) to avoid the CUDA wheels.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# The main job on the embedded default: generated sample world -> instruction Parquet on a local Ray
# -> tiny InstructBLIP tuned on Ray Train + DeepSpeed ZeRO-2, tracked in ./mlflow.db -> zero-shot
# evaluation of the registered model (instructblip@champion) on the 13 held-out sets (50 rows each).
demo: setup
	$(VENV)/bin/iblip sample-data --out $(WORK)/sample_world
	$(VENV)/bin/iblip prepare --raw $(WORK)/sample_world --out $(WORK)/prepared
	$(VENV)/bin/iblip train --data $(WORK)/prepared --storage $(WORK)/runs --run-name demo-$$(date +%Y%m%d-%H%M%S)
	$(VENV)/bin/iblip evaluate --data $(WORK)/prepared --max-samples 50 out=$(WORK)/eval/demo

# Serve the registered model (after `make demo`) on http://127.0.0.1:8000 until Ctrl-C.
serve: setup
	$(VENV)/bin/iblip serve

test: setup
	$(PY) -m pytest -q

bench-prepare: setup
	$(PY) benchmarks/prepare.py

bench-train: setup
	$(PY) benchmarks/train_step.py

bench-serve: setup
	$(PY) benchmarks/serve.py

clean:
	rm -rf $(WORK)
