# fvaudit: `make demo` and `make test` set up everything on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install system-deps services test test-engine demo demo-experiment demo-sweep bench bench-projection clean train-demo-model

$(STAMP): backend/requirements.lock backend/constraints.txt backend/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, alone: the CPU wheel on disk (a plain `torch` would pull CUDA builds)
	$(PIP) install -q -c backend/constraints.txt torch==2.13.0
	$(PIP) install -q -c backend/constraints.txt -r backend/requirements.lock
	$(PIP) install -q --no-deps -e backend
	touch $(STAMP)

install: system-deps $(STAMP)

# Debian packages the project uses: Fashion-MNIST (demo data).
system-deps:
	@bash scripts/system-deps.sh

# Postgres and Redis for the service tests; started when not running.
services:
	@bash scripts/services.sh

test: install services
	PY=$(PY) PYTEST_ARGS="$(PYTEST_ARGS)" bash scripts/test.sh

demo: install
	bash frontend/scripts/build.sh
	$(VENV)/bin/fvaudit demo $(DEMO_ARGS)

# The four-row Table 3.1 experiment on the demo CNN, from the command line (no server).
demo-experiment: install
	$(VENV)/bin/fvaudit demo-experiment

demo-sweep: install
	$(VENV)/bin/fvaudit sweep --demo $(SWEEP_ARGS)

bench: install
	$(PY) bench/kendall_w.py
	$(PY) bench/scan.py

# The thesis' ImageNet audit projected from rates measured on this machine's device (CUDA when
# present): AlexNet, ResNet-50, ViT-B/32 (random init), generated JPEGs. PROJECTION_ARGS e.g.
# "--models alexnet" or "--tiny". Writes bench/results/imagenet_projection_<device>.{json,md}.
bench-projection: install
	$(PY) bench/imagenet_projection.py $(PROJECTION_ARGS)

train-demo-model: install
	$(VENV)/bin/fvaudit train-demo-model --out backend/fvaudit/assets/fmnist_cnn.safetensors

clean:
	rm -rf $(VENV) .fvaudit-cache runs
