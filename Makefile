# healthmesh — the two commands of the quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HM := $(VENV)/bin/healthmesh
DEMO_DIR ?= demo-network
DEMO_PORT ?= 8080

.PHONY: install demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	if command -v npm >/dev/null 2>&1; then npm ci --no-audit --no-fund --silent; fi  # axe-core for the page tests
	touch $@

install: $(VENV)/.installed

## make demo: a local network (hub, hospital, clinic, lab); hospital FHIR API at http://127.0.0.1:$(DEMO_PORT)/fhir
demo: install
	$(HM) demo $(DEMO_DIR) --port $(DEMO_PORT)

## make test: lint, then the whole test suite
test: install lint
	$(PY) -m pytest -q -n 2 --dist loadgroup; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 1; fi; exit $$rc

lint: install
	$(VENV)/bin/ruff check src tests bench tools

bench: install
	$(PY) bench/ingest.py
	$(PY) bench/search.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
