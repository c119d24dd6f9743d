# edgeseg: `make demo` runs the main job, `make test` runs the whole suite. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
EXTRAS := onnx,tflite,openvino,ncnn,coreml,mqtt,convert,convert-tflite,dev
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
ASSETS := ../shared/assets
DEMO_MODEL ?= $(ASSETS)/models/yolov8n-seg-320-int8dyn.onnx
DEMO_SOURCE ?= $(ASSETS)/images
# system packages the live-pipeline tests use (real browser and MQTT broker)
APT_PACKAGES := chromium mosquitto

.PHONY: install sysdeps test demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# Installs the Debian packages the tests need when they are missing (as root, or with sudo).
# Tests that need them print why they skip when this was not possible.
sysdeps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo -n"; \
	  echo "installing system packages:$$missing"; \
	  ( $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null ) \
	    || echo "WARNING: could not install$$missing; the tests that need them will be skipped with a reason"; \
	fi

test: install sysdeps
	$(PY) -m pytest -q

demo: install
	@if [ ! -e "$(DEMO_MODEL)" ]; then \
	  echo "no demo model at $(DEMO_MODEL): run  make demo DEMO_MODEL=your-model.onnx DEMO_SOURCE=your-images/"; exit 1; fi
	$(VENV)/bin/edgeseg info --model $(DEMO_MODEL)
	$(VENV)/bin/edgeseg predict --model $(DEMO_MODEL) --source $(DEMO_SOURCE) --save demo-out --json demo-out/results.json
	@echo "annotated images and results.json are in demo-out/"

bench: install
	$(PY) benchmarks/latency.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
