# mlflowops.tracking: set-up, checks and the local demo.
#   make setup   controller venv in .venv/ (pinned tooling from requirements.txt)
#   make lint    yamllint + ansible-lint (production profile)
#   make unit    pytest: argument specs vs defaults, syntax checks, collection build, probe
#   make test    everything CI runs: lint, unit, then every Molecule scenario
#   make demo    the full stack in one local systemd container (make demo-destroy removes it)
#   make bench   the demo against a stock mlflow server, side by side (BENCH_MODE=small: the 1 GiB host)
#   make reconcile INVENTORY=inventories/do   drift report of a site (exit 2 on drift; APPLY=1 converges)

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.requirements-installed
# two lanes side by side (three made the CPU-bound converges 2-2.6 times slower on two cores): cluster (it waits for
# its image first), beside lifecycle then default
SCENARIOS ?= cluster+lifecycle,default

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: help setup lint unit molecule test demo demo-destroy bench reconcile clean

help:
	@sed -n 's/^#   //p' Makefile

# The stamp depends on requirements.txt: editing the pins reinstalls, otherwise nothing happens.
$(STAMP): requirements.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	@touch $@

# The repository doubles as the collection mlflowops.tracking (its modules are called by FQCN):
# link it into the repo-relative collections path of ansible.cfg and molecule/base.yml.
COLLECTION_LINK := .ansible/collections/ansible_collections/mlflowops/tracking

setup: $(STAMP)
	@mkdir -p $(dir $(COLLECTION_LINK))
	@if [ ! -L $(COLLECTION_LINK) ]; then rm -rf $(COLLECTION_LINK); ln -s ../../../.. $(COLLECTION_LINK); fi

lint: setup
	yamllint --strict .
	ansible-lint

unit: setup
	pytest -n 3 --dist loadfile --durations=10 tests

molecule: setup
	@if [ ! -L $(COLLECTION_LINK) ]; then rm -rf $(COLLECTION_LINK); ln -s ../../../.. $(COLLECTION_LINK); fi
	bash tests/harness/molecule.sh $(SCENARIOS)

# lint and unit side by side (each to its own log, printed when both are done) with the scenarios' preparation
# (engine, base images, wheels), then the scenarios
test: setup
	@mkdir -p .cache/logs
	@start=$$SECONDS; \
	  $(MAKE) --no-print-directory lint >.cache/logs/lint.log 2>&1 & lint=$$!; \
	  $(MAKE) --no-print-directory unit >.cache/logs/unit.log 2>&1 & unit=$$!; \
	  prepare_status=0; bash tests/harness/molecule.sh --prepare || prepare_status=$$?; \
	  lint_status=0; unit_status=0; wait $$lint || lint_status=$$?; wait $$unit || unit_status=$$?; \
	  cat .cache/logs/lint.log .cache/logs/unit.log; \
	  echo "[test] lint exited $$lint_status, unit exited $$unit_status, the scenarios' preparation" \
	    "$$prepare_status, side by side in $$((SECONDS - start)) s"; \
	  if [ $$lint_status -ne 0 ] || [ $$unit_status -ne 0 ] || [ $$prepare_status -ne 0 ]; then \
	    if [ -f .cache/dockerd.started-by-prepare ]; then bash tests/harness/docker-engine.sh stop; fi; \
	    exit 1; \
	  fi
	$(MAKE) --no-print-directory molecule

demo: setup
	bash tests/harness/demo.sh up

demo-destroy:
	bash tests/harness/demo.sh destroy
	DEMO_CONTAINER=mlflowops-bench-small DEMO_STATE=.cache/bench/small-host bash tests/harness/demo.sh destroy

bench: setup
	python tests/bench/bench.py

# The drift report (README: Periodic runs); DRIFT_REPORT is where it lands.
INVENTORY ?=
DRIFT_REPORT ?= $(CURDIR)/.cache/drift-report.json
reconcile: setup
	@test -n "$(INVENTORY)" || { echo "usage: make reconcile INVENTORY=inventories/<yours> [APPLY=1]" >&2; exit 2; }
	@mkdir -p $(dir $(DRIFT_REPORT))
	ANSIBLE_CALLBACKS_ENABLED=mlflowops.tracking.drift_report MLFLOWOPS_DRIFT_REPORT=$(DRIFT_REPORT) \
	  ansible-playbook -i $(INVENTORY) playbooks/reconcile.yml $(if $(APPLY),-e reconcile_apply=true,--check --diff)

clean:
	rm -rf build .pytest_cache
