# Two commands matter: `make dev` and `make test`. Everything else is a building block.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The OpenID provider the interoperability tests run the gateway against (oidc-provider, on Node).
INTEROP := tests/interop
INTEROP_STAMP := $(INTEROP)/node_modules/.installed
NPM := $(shell command -v npm)
# The dashboard's TypeScript package: API types generated from bff/openapi.json and a typed client;
# its tsc also type-checks the console (bff/static/console.js) against those types.
TS_CLIENT := clients/typescript
TS_STAMP := $(TS_CLIENT)/node_modules/.installed

.PHONY: dev test lint format bench bench-save venv lock interop types clean

venv: $(STAMP)

# Reinstall only when the dependencies or their locked versions change.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,otel]'
	@touch $(STAMP)

# Resolve pyproject.toml's dependencies (and the dev and otel extras) into requirements.lock,
# keeping the versions already locked where they still fit; every install takes them from there.
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra otel --python-version 3.11 \
	  --universal --quiet -o requirements.lock

# Reinstall only when the provider's locked packages change.
$(INTEROP_STAMP): $(INTEROP)/package.json $(INTEROP)/package-lock.json
	npm ci --prefix $(INTEROP) --no-audit --no-fund
	@touch $(INTEROP_STAMP)

interop: $(INTEROP_STAMP)

# Reinstall only when the TypeScript package's locked tools change.
$(TS_STAMP): $(TS_CLIENT)/package.json $(TS_CLIENT)/package-lock.json
	npm ci --prefix $(TS_CLIENT) --no-audit --no-fund
	@touch $(TS_STAMP)

# After changing bff/openapi.json: regenerate the dashboard's API types (a test fails while the
# committed ones are stale), then commit clients/typescript/src/api.d.ts.
types: $(TS_STAMP)
	$(TS_CLIENT)/node_modules/.bin/openapi-typescript bff/openapi.json --output $(TS_CLIENT)/src/api.d.ts

# ARGS goes on to `bff dev`: make dev ARGS="--port 9000 --sandbox-port 9001".
dev: $(STAMP)
	$(BIN)/bff dev $(ARGS)

# With npm, tsc type-checks the TypeScript client and the console; without Node that check is
# skipped with a note, except in CI (CI=true), where it must run.
lint: $(STAMP) $(if $(NPM),$(TS_STAMP))
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
ifneq ($(NPM),)
	$(TS_CLIENT)/node_modules/.bin/tsc --noEmit -p $(TS_CLIENT)
else ifeq ($(CI),true)
	@echo "npm is required in CI: it type-checks $(TS_CLIENT) and bff/static/console.js" >&2; exit 1
else
	@echo "note: npm is not installed, so $(TS_CLIENT) and bff/static/console.js were not type-checked"
endif

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# With npm the provider is installed first; without Node the interoperability tests skip (CI
# sets REQUIRE_INTEROP=1, so there they must run).
test: lint $(if $(NPM),$(INTEROP_STAMP))
	$(BIN)/pytest

# Every benchmark runs even if another fails (the client one needs nginx, the gateway one nginx,
# wrk and redis-server); any failing fails the target. The gateway one writes
# bench/out/latest.{json,png}, which git ignores.
bench: $(STAMP)
	status=0; \
	$(BIN)/python bench/upstream_client_bench.py || status=1; \
	$(BIN)/python bench/bff_bench.py || status=1; \
	$(BIN)/python bench/gateway_bench.py || status=1; \
	exit $$status

# The gateway benchmark, run to renew the committed figures (bench/results/latest.{json,png}),
# which bench/README.md quotes.
bench-save: $(STAMP)
	$(BIN)/python bench/gateway_bench.py --out bench/results

clean:
	rm -rf $(VENV) .data .mypy_cache .pytest_cache .ruff_cache $(INTEROP)/node_modules \
	  $(TS_CLIENT)/node_modules tests/browser/artifacts bench/out
