# nemo2sherpa: two set-up commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
ROOT := $(abspath .)
PYTHON ?= python3.11
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python

export AIRFLOW_HOME ?= $(ROOT)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(ROOT)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(ROOT)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__PARALLELISM := 4
export AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT := 120
export NEMO2SHERPA_VENV_CACHE ?= $(ROOT)/.cache/venvs
export NEMO2SHERPA_WORKSPACE ?= $(ROOT)/.workspace
# uv ignores pip's config: hand it pip's find-links (where the local CPU torch wheel lies) and
# never let it download a Python of its own.
export UV_FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell pip config get global.find-links 2>/dev/null))
export UV_PYTHON_DOWNLOADS := never
export PATH := $(VENV)/bin:$(PATH)
export PYTHONPATH := $(ROOT)/include

VARIANTS ?= fp32,int8

.PHONY: bench-full-size bench-long-audio bench-int8 bench-publish venv demo test system-deps convert hotwords-check up up-celery down fixtures clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q uv==0.13.8 2>&1 | grep -v "is ignored" || true
	$(VENV)/bin/uv pip install -q --python $(PY) -r requirements.txt
	touch $@

venv: $(VENV)/.installed

## make demo: local S3 server + one DAG run on the embedded tiny model; prints URIs and figures.
demo: venv
	$(PY) scripts/demo.py $(if $(HUB),--hub)

## make test: the whole suite (CI runs this). The browser and Celery tests need Debian's chromium and
## redis-server: installed here when missing (apt-get, as root), else the command to run is printed.
SYSTEM_PACKAGES := chromium redis-server
system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing Debian packages: $$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; }; \
	  else echo "the tests need Debian packages: sudo apt-get install -y $$missing" >&2; exit 1; fi; fi

test: venv system-deps
	$(PY) -m pytest -ra --durations=30 tests

## make convert SRC=<.nemo path | repo id | registry name> OUT=<new dir> [VARIANTS=fp32,int8] [INT8_RECIPE=sherpa-onnx]
##              [EVAL=<manifest.jsonl | folder of audio>] [PUBLISH=s3://<bucket>/<prefix>,hf://<namespace>]
##              [LOCAL_ATTENTION=on | <left>,<right>]  (local attention: memory linear in a recording's length)
convert: venv
	@if [ -z "$(SRC)" ] || [ -z "$(OUT)" ]; then echo "usage: make convert SRC=<.nemo|repo id> OUT=<new dir>" >&2; exit 2; fi
	$(PY) -m nemo2sherpa convert "$(SRC)" "$(OUT)" --variants "$(VARIANTS)" $(if $(INT8_RECIPE),--int8-recipe "$(INT8_RECIPE)") $(if $(EVAL),--eval-set "$(EVAL)") $(if $(PUBLISH),--publish-to "$(PUBLISH)") $(if $(LOCAL_ATTENTION),--local-attention "$(LOCAL_ATTENTION)")

## make hotwords-check BUNDLE=<bundle dir> NEMO=<its .nemo> PHRASES=<hotwords file>: how sherpa-onnx will split
## each phrase (bpe.vocab) against the checkpoint's tokenizer; differences flagged (STRICT=1: exit 3 on any).
hotwords-check: venv
	@if [ -z "$(BUNDLE)" ] || [ -z "$(NEMO)" ] || [ -z "$(PHRASES)" ]; then echo "usage: make hotwords-check BUNDLE=<dir> NEMO=<.nemo> PHRASES=<file>" >&2; exit 2; fi
	$$($(PY) -m nemo2sherpa venv onnx)/bin/python -m nemo2sherpa hotwords-check --bundle "$(BUNDLE)" --nemo "$(NEMO)" "$(PHRASES)" $(if $(STRICT),--strict) >/dev/null

## make up / make down: Airflow (UI on 127.0.0.1:8080) + S3 server on loopback.
up: venv
	$(PY) scripts/stack.py up
down: venv
	$(PY) scripts/stack.py down
## make up-celery: the same with CeleryExecutor, Redis and two workers (queues default and gpu).
up-celery: venv system-deps
	NEMO2SHERPA_EXECUTOR=celery $(PY) scripts/stack.py up

## make fixtures: retrain the committed tiny TDT and RNNT models on the clips, and a TDT model on other
## sentences with its own evaluation set (CPU, ~7-30 min each;
## needs espeak-ng and sox). CI never runs this: it uses the committed checkpoints.
fixtures: venv
	tests/fixtures/make_clips.sh
	$$($(PY) -m nemo2sherpa venv nemo)/bin/python tests/fixtures/train_tiny_model.py --out tests/fixtures/tiny-tdt.nemo
	$$($(PY) -m nemo2sherpa venv nemo)/bin/python tests/fixtures/train_tiny_model.py --out tests/fixtures/tiny-rnnt.nemo --durations ""
	$$($(PY) -m nemo2sherpa venv nemo)/bin/python tests/fixtures/train_tiny_model.py --out tests/fixtures/tiny-tdt-other.nemo \
	  --sentences tests/fixtures/other_sentences.txt --eval-out tests/fixtures/other-eval --seed 4321

## make bench-full-size: parakeet-tdt-1.1b's architecture (random weights) through everything a default DAG run does
## (every step, the runtime matrix, the archives, the benchmark, publish to a loopback S3 server); CI runs it after
## make test. Writes benchmarks/results/full-dag-1.1b.{json,md}; exits 1 when a step fails (~15 GB disk, ~10 GB RAM).
bench-full-size: venv
	$(PY) benchmarks/full_size.py $(ARGS)

## make bench-long-audio: what sherpa-onnx needs, in memory and time, to decode 1, 5 and 10 minutes at once at 1.1B
## size, fp32 and int8; by hand. Writes benchmarks/results/long-audio-1.1b.{json,md} (~25 min, ~20 GB RAM).
bench-long-audio: venv
	$(PY) benchmarks/long_audio.py $(ARGS)

## make bench-int8: the int8 recipes side by side at 1.1B size (fp32, sherpa-onnx's, ours), interleaved, by hand;
## writes benchmarks/results/int8-recipes-1.1b.{json,md} (~15 min, ~20 GB disk, ~10 GB RAM).
bench-int8: venv
	$(PY) benchmarks/int8_recipes.py $(ARGS)

## make bench-publish: publish vs plain boto3 upload of a 2 GiB file to a loopback S3 server, by hand.
bench-publish: venv
	$(PY) benchmarks/publish_speed.py

clean:
	rm -rf .workspace .demo .airflow
