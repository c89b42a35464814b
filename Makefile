# Two commands do everything on a fresh machine: `make up` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: up test lint audit services stop bench load fuzz clean screenshots citus

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

## Run the test suite against real PostgreSQL and Redis (started or reused). --durations: every log shows where the
## time goes (a later --durations in PYTEST_ARGS wins).
test: $(STAMP)
	HF_HUB_OFFLINE=1 exec $(PY) scripts/devstack.py test --durations=25 $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	# The API contract: every operation declared, zero warnings, a valid OpenAPI document (no database needed).
	DJANGO_SETTINGS_MODULE=config.settings.typecheck $(PY) manage.py spectacular --validate --fail-on-warn --file /dev/null

## Known vulnerabilities in the installed dependencies (every pin and what it pulls in) fail; exceptions, each with
## its reason, are in .pip-audit-ignore. --strict: a package no vulnerability service answers for fails the audit
## instead of passing unaudited, so a machine that reaches no service cannot pass it (docs/dependencies.md).
audit: $(STAMP)
	$(VENV)/bin/pip freeze --exclude-editable > $(VENV)/audit-requirements.txt  # the plugin is ours, not on PyPI
	$(VENV)/bin/pip-audit --strict --no-deps --disable-pip --progress-spinner off -r $(VENV)/audit-requirements.txt \
	  $$(sed -e 's/#.*//' -e '/^[[:space:]]*$$/d' -e 's/^[[:space:]]*/--ignore-vuln /' .pip-audit-ignore) \
	  || { echo "make audit failed: a known vulnerability, or no vulnerability service answered (above)" >&2; exit 1; }

services: $(STAMP)
	$(PY) scripts/devstack.py services

stop:
	$(PY) scripts/devstack.py stop

## A Citus cluster (coordinator + two workers, data in var/citus/; Citus built once from ../shared/vendor) for
## organisations sharded over workers (docs/operations.md). Prints the DATABASE_URL to run the product on it with
## DATABASE_CITUS=true. CITUS_ARGS="--port 18600 --workers 2"; `$(PY) scripts/citus.py stop` stops it.
citus: $(STAMP)
	$(PY) scripts/citus.py start $(CITUS_ARGS)

## PNGs of the main pages (light, dark, phone) into docs/screenshots/, driven by headless Chromium.
screenshots: $(STAMP)
	AGENTRY_SCREENSHOTS=1 HF_HUB_OFFLINE=1 $(PY) scripts/devstack.py test tests/browser/test_screenshots.py -q

bench: $(STAMP)
	$(PY) scripts/devstack.py run bench/tenant_provisioning.py

## Load test (bench/load.py): 20 organisations, sustainable rate, 2x overload (shed with 429/503 + Retry-After),
## recovery, then a soak with RSS per process. LOAD_ARGS="--soak 60" for a shorter soak (default 300 s).
load: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) scripts/devstack.py run bench/load.py $(LOAD_ARGS)

## Fuzzing (scripts/fuzz.py): schemathesis over every operation of the live API contract, as an organisation admin
## (JWT) and as an API key, rate limiting on and off; prints operations, cases, 5xx and violations, fails on any.
## FUZZ_ARGS="--max-examples 50" for a larger budget (cases per operation; default 25), "--no-coverage" for fewer.
fuzz: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) scripts/devstack.py run scripts/fuzz.py $(FUZZ_ARGS)

clean: stop
	rm -rf var staticfiles
