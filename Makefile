# One command each for developers and CI. Everything installs itself from nothing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps install upgrade constraints test lint bench run clean

# System services the tests and `make run` use: redis-server, PostgreSQL 15, Prometheus (promtool).
# They are installed, never started here: tests start them on free loopback ports and stop them.
deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# The versions installed are those of constraints.txt, the ones the suite last passed with.
$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: deps $(STAMP)

# Refreshing constraints.txt (README, "Dependencies"): the newest versions setup.cfg allows, then
# `make test`, then `make constraints` to write down what passed.
upgrade: deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --upgrade -e '.[test]'
	touch $(STAMP)

constraints: $(STAMP)
	{ echo "# The exact versions make install installs: those the suite last passed with (README, Dependencies)."; \
	  $(PY) -m pip freeze --exclude-editable | grep -iv '^keepa-deals'; } > constraints.txt

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

run: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/keepa-deals up
