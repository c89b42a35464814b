# Two commands do everything on a fresh machine: `make up` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: up test lint services stop bench clean screenshots

$(STAMP): requirements.txt requirements-dev.txt package.json package-lock.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	# Front-end assets (htmx, Pico CSS, Chart.js) from npm into static/vendor/; the copies are committed,
	# so without npm the step is skipped and the product still works offline.
	if command -v npm >/dev/null 2>&1; then \
	  (npm ci --no-audit --no-fund --loglevel=error && npm run -s vendor) || echo "npm failed: using the committed static/vendor/ files"; \
	else echo "npm not found: using the committed static/vendor/ files"; fi
	touch $(STAMP)

venv: $(STAMP)

## Run the product on the embedded stack: PostgreSQL+pgvector, Redis, daphne, Celery workers and beat.
## `exec` (here and in `test`): devstack is make's own child, so the SIGTERM make passes on reaches it.
up: $(STAMP)
	HF_HUB_OFFLINE=1 exec $(PY) scripts/devstack.py up

## Run the test suite against real PostgreSQL and Redis (started or reused).
test: $(STAMP)
	HF_HUB_OFFLINE=1 exec $(PY) scripts/devstack.py test $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

services: $(STAMP)
	$(PY) scripts/devstack.py services

stop:
	$(PY) scripts/devstack.py stop

## PNGs of the main pages (light, dark, phone) into docs/screenshots/, driven by headless Chromium.
screenshots: $(STAMP)
	AGENTRY_SCREENSHOTS=1 HF_HUB_OFFLINE=1 $(PY) scripts/devstack.py test tests/browser/test_screenshots.py -q

bench: $(STAMP)
	$(PY) scripts/devstack.py run bench/tenant_provisioning.py

clean: stop
	rm -rf var staticfiles
