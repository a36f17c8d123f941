# Set-up and everyday commands. `make serve` and `make test` work on a fresh Debian
# machine with Python 3.11 (as root, missing system packages are installed with apt).

PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
APT     := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends

.PHONY: serve test system system-test assets venv schema bench bench-quick clean

serve: system venv assets
	$(BIN)/ims serve

test: system system-test venv assets
	$(BIN)/python -m pytest $(PYTEST_ARGS)

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

clean:
	rm -rf $(VENV) app/web/node_modules .pytest_cache
