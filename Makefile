# Set-up and common jobs. `make demo` and `make test` set everything up themselves.
#
# torch, the one large dependency, is chosen like this:
# - by default, the torch the environment already has: a .venv whose Python imports torch keeps
#   it, and a new .venv made from a $(PYTHON) that imports torch uses that Python's packages
#   (`make install PYTHON=/path/to/python` reuses an existing environment's torch);
# - otherwise $(TORCH), torch==2.13.0, the CPU wheel pip finds offline on our machines (an
#   unpinned torch from PyPI on Linux is the CUDA build, several GB);
# - `make install TORCH_INDEX=URL [TORCH=SPEC]` installs that torch instead, TORCH_INDEX being
#   pip's --index-url for torch alone, e.g. a CUDA build:
#     make install TORCH_INDEX=https://download.pytorch.org/whl/cu126 TORCH=torch
#   or the CPU build anywhere: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
# The choice is recorded in $(TORCH_SPEC); torch is installed again only when it changes.
PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip --quiet --disable-pip-version-check
STAMP       := $(VENV)/.installed
TORCH_STAMP := $(VENV)/.torch
TORCH_SPEC  := $(VENV)/.torch-spec
TORCH       ?= torch==2.13.0
TORCH_INDEX ?=

# keep: the torch already there, else $(TORCH); pip: $(TORCH) from TORCH_INDEX (or pip's own
# index) whatever is there
ifeq ($(origin TORCH)$(strip $(TORCH_INDEX)),file)
TORCH_MODE := keep
else
TORCH_MODE := pip
endif
TORCH_WANT := $(strip $(TORCH_MODE) $(TORCH) $(TORCH_INDEX))
TORCH_INDEX_OPT := $(if $(strip $(TORCH_INDEX)),--index-url $(strip $(TORCH_INDEX)))

export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: install demo test test-all bench bench-cpu bench-gpu clean FORCE

install: $(STAMP)

# A $(PYTHON) that imports torch lends its packages to .venv: --system-site-packages for a base
# interpreter; for one that is itself a virtual environment (whose packages that option would not
# reach) a .pth file in .venv lists its site-packages.
$(PY):
	@if ! $(PYTHON) -c 'import torch' 2>/dev/null; then \
	    echo "$(PYTHON) -m venv $(VENV)"; \
	    $(PYTHON) -m venv $(VENV); \
	elif $(PYTHON) -c 'import sys; sys.exit(sys.prefix != sys.base_prefix)'; then \
	    echo "$(PYTHON) imports torch: $(PYTHON) -m venv --system-site-packages $(VENV)"; \
	    $(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
	    echo "$(PYTHON) (a virtual environment) imports torch: $(VENV) sees its site-packages (base-env.pth)"; \
	    $(PYTHON) -m venv $(VENV) && \
	    $(PYTHON) -c 'import site; print(*site.getsitepackages(), sep="\n")' \
	        > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/base-env.pth"; \
	fi

# Rewritten only when the torch wanted changes (so that $(TORCH_STAMP) is remade then and only then).
TORCH_HAD := $(shell cat $(TORCH_SPEC) 2>/dev/null)
ifneq ($(TORCH_HAD),$(TORCH_WANT))
$(TORCH_SPEC): FORCE
endif
$(TORCH_SPEC): | $(PY)
	echo '$(TORCH_WANT)' > $@

FORCE:

$(TORCH_STAMP): $(TORCH_SPEC)
ifeq ($(TORCH_MODE),keep)
	@if $(PY) -c 'import torch' 2>/dev/null; then \
	    echo "keeping the torch $(VENV) imports: $$($(PY) -c 'import torch; print(torch.__version__, "in", torch.__file__)')"; \
	else \
	    echo "$(PIP) install '$(TORCH)'"; \
	    $(PIP) install '$(TORCH)'; \
	fi
else
	-$(PIP) uninstall --yes torch
	$(PIP) install --ignore-installed --no-deps $(TORCH_INDEX_OPT) '$(TORCH)'
	$(PIP) install $(TORCH_INDEX_OPT) '$(TORCH)'
endif
	@if nvidia-smi -L >/dev/null 2>&1 && ! $(PY) -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then \
	    echo "WARNING: this machine has an NVIDIA GPU but $(VENV)'s torch cannot use it: --device auto will run on the CPU." >&2; \
	    echo "         For a CUDA build: make install TORCH_INDEX=https://download.pytorch.org/whl/cu126 TORCH=torch" >&2; \
	fi
	touch $@

$(STAMP): pyproject.toml $(TORCH_STAMP)
	$(PIP) install -e '.[test]'
	# spandrel (the `upscale` extra) without its torchvision: on our index torchvision is a CUDA
	# build that replaces a CPU torch; img2img_cli/upscalers.py imports spandrel without it.
	$(PIP) install --no-deps 'spandrel>=0.4,<0.5' 'einops>=0.6'
	touch $@

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
