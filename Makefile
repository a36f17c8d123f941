# Set-up and everyday commands. `make serve` and `make test` work on a fresh Debian
# machine with Python 3.11 (as root, missing system packages are installed with apt).

PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
APT     := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends

.PHONY: serve test lint system system-test assets venv schema bench bench-quick clean client client-venv ts-client

serve: system venv assets
	$(BIN)/ims serve

# client-venv, not client: regenerating here would overwrite the committed client that
# tests/clients compares a fresh generation with.
test: system system-test venv assets client-venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The style's static checks, with the versions pyproject.toml pins: ruff, then mypy strict.
lint: venv
	$(BIN)/ruff check app tests
	$(BIN)/mypy app tests

# System packages: qemu-img (conversions), Node.js/npm (GraphiQL assets), venv support.
system:
	@missing=""; \
	command -v qemu-img >/dev/null || missing="$$missing qemu-utils"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	$(PY) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; apt-get update -qq && $(APT) $$missing; fi

# Only the tests need a browser (GraphiQL is driven in headless Chromium).
system-test:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; apt-get update -qq && $(APT) $$missing; fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

assets: app/web/node_modules/.package-lock.json

app/web/node_modules/.package-lock.json: app/web/package.json app/web/package-lock.json
	npm ci --prefix app/web --ignore-scripts --no-audit --no-fund

schema: venv
	$(BIN)/ims schema export

# The typed Python client app/client, from graphql/schema.graphql and graphql/operations
# ([tool.ariadne-codegen] in pyproject.toml). ariadne-codegen pins graphql-core < 3.3 and the
# app needs >= 3.3, so it has a venv of its own; ruff is pinned because it formats the output.
CODEGEN_VENV  ?= .venv-codegen
CODEGEN_PINS  := ariadne-codegen==0.19.0 graphql-core==3.2.14 ruff==0.15.22 pydantic==2.14.4 httpx==0.28.1
CODEGEN_STAMP := $(CODEGEN_VENV)/.installed

client: client-venv
	rm -rf app/client
	$(CODEGEN_VENV)/bin/ariadne-codegen client

client-venv: $(CODEGEN_STAMP)

$(CODEGEN_STAMP): Makefile
	test -x $(CODEGEN_VENV)/bin/python || $(PY) -m venv $(CODEGEN_VENV)
	$(CODEGEN_VENV)/bin/pip install -q --upgrade pip
	$(CODEGEN_VENV)/bin/pip install -q $(CODEGEN_PINS)
	touch $@

# TypeScript types and typed documents for front ends, from the same committed SDL and
# operations, offline: app/web/codegen/generated/ (gitignored), then type-checked.
ts-client: app/web/codegen/node_modules/.package-lock.json
	npm run --prefix app/web/codegen --silent codegen
	npm run --prefix app/web/codegen --silent typecheck

app/web/codegen/node_modules/.package-lock.json: app/web/codegen/package.json app/web/codegen/package-lock.json
	npm ci --prefix app/web/codegen --ignore-scripts --no-audit --no-fund

# Every benchmark of DESIGN §4, one table (README "Performance"); bench-quick uses small sizes
# (a minute or two) and runs in CI. Exit 1 only when a benchmark crashes, not when a figure misses.
bench: venv
	$(BIN)/python -m tests.bench.run $(BENCH_ARGS)

bench-quick: venv
	$(BIN)/python -m tests.bench.run --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(CODEGEN_VENV) app/web/node_modules app/web/codegen/node_modules app/web/codegen/generated .pytest_cache \
	  .mypy_cache .ruff_cache
