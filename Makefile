# Basira: `make demo` runs the product on embedded defaults, `make test` runs every test this
# machine can run. Both create .venv on first use and are fast once it is installed.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A local CPU wheel of torch is used when the machine has one; any other torch pulls CUDA.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PIP := $(BIN)/python -m pip --disable-pip-version-check
DEMO_DIR ?= data/demo
MODEL ?= models/lung-nodule-unet/release
DEMO_STUDIES ?= 4
DEMO_PORT ?= 8000

.PHONY: install demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# onnxruntime-openvino (x86-64 Linux) and onnxruntime both install the `onnxruntime` package, so a
# venv made before the project moved to the former drops the latter first.
DROP_PLAIN_ORT := $(if $(filter Linux-x86_64,$(shell uname -s)-$(shell uname -m)),onnxruntime,)

# torch==2.13.0 goes in first and alone so that nothing later can resolve a newer, CUDA build.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -q $(FIND_LINKS) "torch==2.13.0"
	$(if $(DROP_PLAIN_ORT),$(PIP) uninstall -y -q $(DROP_PLAIN_ORT))
	$(PIP) install -q $(FIND_LINKS) -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The whole product: sample studies from a seed neither the training (7) nor the test set
# (1007) used, the shipped model verified, then the service with a demo hospital and radiologist
# (login printed) receiving the studies through its API. Serves until Ctrl-C.
demo: install $(DEMO_DIR)/studies/manifest.json
	$(BIN)/basira models verify $(MODEL)
	$(BIN)/basira demo $(DEMO_DIR)/studies --data $(DEMO_DIR)/service --model $(MODEL) \
		--port $(DEMO_PORT)

$(DEMO_DIR)/studies/manifest.json: | $(STAMP)
	$(BIN)/basira synth --out $(DEMO_DIR)/studies --n $(DEMO_STUDIES) --seed 42 --preview

test: install
	$(BIN)/python -m pytest -n 2 --dist loadgroup

lint: install
	$(BIN)/ruff check pipelines serving tests benchmarks
	$(BIN)/ruff format --check pipelines serving tests benchmarks
	$(BIN)/mypy

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
