# Stockade: the whole set-up on a fresh Debian machine.
#   make run    set up and start the server on the embedded default (demo accounts printed)
#   make test   set up and pass every test (starts every server the tests need)

# Debian's python3 when there is one recent enough (3.11, as pyproject.toml requires): Debian
# builds it with profile-guided and link-time optimisation, and it ran the 1:1 benchmark about 8%
# faster than a python3 built without them as a shared library (pyenv's default build;
# docs/benchmarks.md). Otherwise the first python3 on PATH. PYTHON=... picks another.
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo /usr/bin/python3 || echo python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

# Debian packages the test suite drives (real servers and clients).
TEST_DEBS := postgresql go-sendxmpp profanity tmux chromium slapd ldap-utils clamav-daemon

.PHONY: run test venv test-deps system-deps clean docs

run: $(VENV)/.installed node_modules/.installed
	$(VENV)/bin/stockade serve --demo

test: $(VENV)/.installed-test node_modules/.installed system-deps
	$(PY) -m pyflakes src tests
	$(PY) -m pytest -q -p no:cacheprovider

venv: $(VENV)/.installed

$(VENV)/bin/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip && $(PYTHON) -m venv $(VENV); \
	  else echo "stockade: cannot create a virtual environment; install python3-venv (apt-get install python3-venv)"; exit 1; fi; }
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml requirements.lock
	$(PIP) install -q -r requirements.lock
	$(PIP) install -q --no-deps -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.lock
	$(PIP) install -q -r requirements-test.lock
	touch $@

# The web client (Converse.js), pinned in package-lock.json; its files are prebuilt.
node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || scripts/ensure-debs npm
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

# Install the Debian packages the tests need when they are missing (only possible as root).
system-deps:
	@scripts/ensure-debs $(TEST_DEBS)

docs: $(VENV)/.installed
	$(PY) -m stockade.config.docs > docs/configuration.md

# The load benchmark beside Prosody and ejabberd (docs/benchmarks.md); installs the peers from
# Debian when missing (as root). BENCH_ARGS passes options, e.g. BENCH_ARGS="--rounds 5 --json r.json".
.PHONY: bench
bench: $(VENV)/.installed
	@scripts/ensure-debs prosody ejabberd
	bench/run all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache node_modules
