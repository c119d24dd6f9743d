# edgeseg: `make demo` runs the main job, `make test` runs the whole suite. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
EXTRAS := onnx,tflite,openvino,ncnn,coreml,mqtt,convert,convert-tflite,convert-tf,convert-paddle,dev
# [convert-tf]'s packages whose pins conflict with TensorFlow 2.21 / numpy 2 (see pyproject.toml)
NO_DEPS := tf-keras==2.21.0 onnx2tf==1.29.24 tensorflowjs==4.22.0
# @tensorflow/tfjs for the TF.js test in headless Chromium (npm cache outside the repo)
TFJS_DIR ?= $(HOME)/.cache/edgeseg-tfjs
TFJS_VERSION := 4.22.0
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
ASSETS := ../shared/assets
# `make demo`: a light venv (runtime + ONNX Runtime only, no torch), the embedded default model on a generated clip.
# DEMO_MODEL=your.onnx / DEMO_SOURCE=video-or-images run your own model and input through the same steps.
DEMO_VENV := .venv-demo
DEMO_STAMP := $(DEMO_VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEMO_DIR := runs/demo
DEMO_MODEL ?=
DEMO_SOURCE ?= $(DEMO_DIR)/clip/video.mp4
# system packages the live-pipeline tests use (real browser and MQTT broker)
APT_PACKAGES := chromium mosquitto

.PHONY: install sysdeps tfjs test demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(PY) -m pip install -q --no-deps $(NO_DEPS)
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

# @tensorflow/tfjs from the npm registry (the TF.js test skips with a reason without node/npm)
tfjs:
	@if command -v npm >/dev/null 2>&1; then \
	  [ -f $(TFJS_DIR)/node_modules/@tensorflow/tfjs/dist/tf.min.js ] || \
	  npm install -s --no-audit --no-fund --prefix $(TFJS_DIR) @tensorflow/tfjs@$(TFJS_VERSION) \
	  || echo "WARNING: npm could not install @tensorflow/tfjs; the TF.js test will be skipped with a reason"; \
	else echo "WARNING: npm not found; the TF.js test will be skipped with a reason"; fi

test: install sysdeps tfjs
	EDGESEG_TFJS_DIR=$(TFJS_DIR) $(PY) -m pytest -q

$(DEMO_VENV)/bin/python:
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install -q --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(DEMO_VENV)/bin/python
	$(DEMO_VENV)/bin/python -m pip install -q -e ".[onnx]"
	rm -f $(DEMO_VENV)/.installed-*
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	@mkdir -p $(DEMO_DIR)
	@if [ "$(DEMO_SOURCE)" = "$(DEMO_DIR)/clip/video.mp4" ]; then \
	  $(DEMO_VENV)/bin/edgeseg data synth --out $(DEMO_DIR)/clip --images 2 --video 10 --fps 15 --seed 7 --overwrite; fi
	$(DEMO_VENV)/bin/edgeseg info $(if $(DEMO_MODEL),--model $(DEMO_MODEL))
	$(DEMO_VENV)/bin/edgeseg run $(if $(DEMO_MODEL),--model $(DEMO_MODEL)) --source $(DEMO_SOURCE) --every-frame \
	  --save $(DEMO_DIR)/demo.mp4 --json $(DEMO_DIR)/detections.jsonl
	@echo "annotated video: $(DEMO_DIR)/demo.mp4   detections (one JSON line per frame): $(DEMO_DIR)/detections.jsonl"

bench: install
	$(PY) benchmarks/latency.py

clean:
	rm -rf $(VENV) $(DEMO_VENV) $(DEMO_DIR) .pytest_cache
