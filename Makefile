# The two commands the README opens with: `make demo` and `make test`.
# Debian's /usr/bin/python3.11 first: an optimised build with its libpython linked into the
# executable, as the image's python:3.11-slim is optimised (PGO and LTO). The pyenv build found
# first on the development machine has neither and loads libpython3.11.so: the rule engine ran
# 22-35% faster on Debian's (README, "Speed").
PYTHON ?= $(or $(wildcard /usr/bin/python3.11),$(shell command -v python3.11 || command -v python3))
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv demo test lint schemas kafka-up kafka-down clean secrets

$(BIN)/safety-monitor: pyproject.toml
	@test -n "$(PYTHON)" || { echo "need python3.11 on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/safety-monitor

demo: venv
	$(BIN)/safety-monitor demo

test: venv
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/safety-monitor contracts check

schemas: venv
	$(BIN)/safety-monitor contracts export

kafka-up: venv
	$(BIN)/safety-monitor kafka up

kafka-down: venv
	$(BIN)/safety-monitor kafka down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# the notifier's link and webhook secrets for docker-compose.yml (random; kept if present)
secrets:
	@mkdir -p deploy/secrets && chmod 700 deploy/secrets
	@for name in notifier_link_secret notifier_webhook_secret; do \
	  test -s deploy/secrets/$$name || (umask 077; python3 -c "import secrets; print(secrets.token_hex(32))" > deploy/secrets/$$name); \
	done; echo "deploy/secrets/: the notifier's secrets"
