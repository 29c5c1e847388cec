# Set-up and common jobs. `make demo` and `make test` set everything up themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch is pinned to the CPU wheel available offline on our machines; an unpinned torch
# pulls several GB of CUDA wheels.
TORCH  ?= torch==2.13.0

export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: install demo test test-all bench bench-cpu bench-gpu clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/img2img run examples/chelsea.png --model tiny \
		-p "a cat on a sofa" --style watercolor --steps 20 --seed 42 -o outputs/
	@echo "(the tiny model is for plumbing and CI: its pictures are meaningless; use --model for a real one)" >&2

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-all: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --runslow

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/folder.py --images 32 --steps 20 --strength 0.75

bench-cpu: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/cpu.py

bench-gpu: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/gpu.py

clean:
	rm -rf outputs .pytest_cache build *.egg-info
