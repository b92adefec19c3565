# fsmount: `make demo` and `make test` work on a fresh Debian machine, installing what is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv systemd rsync
# the UI's browser tests (tests/test_ui_browser.py): Debian's chromium and its chromedriver
APT_PACKAGES += chromium chromium-driver fonts-dejavu-core
BENCH_PACKAGES := rclone s3fs
# Where `make install` puts things (overridable, e.g. for a staging root).
BINDIR ?= /usr/local/bin
CONFDIR ?= /etc/fsmount
UNITDIR ?= /etc/systemd/system
SYSTEMD_RUN ?= /run/systemd/system
BENCH_VENV := .bench-venv
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_PIP := torch==2.14.1 torchvision==0.29.1 pillow

.PHONY: all demo test lint bench system-deps bench-deps test-servers install clean bytecode

all: test

# System packages, only when something is missing (apt-get needs root: sudo otherwise).
system-deps:
	@if ! command -v fusermount3 >/dev/null || ! pkg-config --exists fuse3 2>/dev/null \
	    || ! command -v gcc >/dev/null || ! command -v systemd-analyze >/dev/null || ! command -v rsync >/dev/null \
	    || ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null \
	    || ! $(PYTHON) -c 'import venv, ensurepip' 2>/dev/null; then \
	  echo ">> installing system packages: $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

# Test servers besides moto: s3rver (an S3 server that ignores conditional writes) and Azurite
# (Azure Blob emulator), into .servers/. The GCS emulators come from PyPI with the test extra.
S3RVER := .servers/node_modules/s3rver/bin/s3rver.js
AZURITE := .servers/node_modules/azurite/dist/src/blob/main.js
test-servers:
	@if ! command -v npm >/dev/null; then echo ">> installing nodejs npm"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm >/dev/null; fi
	@test -f $(S3RVER) || { echo ">> installing s3rver 3.7.1"; npm install --silent --prefix .servers s3rver@3.7.1; }
	@test -f $(AZURITE) || { echo ">> installing azurite 3.37.0"; npm install --silent --prefix .servers azurite@3.37.0; }

bench-deps: system-deps $(BENCH_STAMP)
	@for p in $(BENCH_PACKAGES); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo ">> installing$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; fi

# The benchmark's own venv (bench/bench_epoch.py's DataLoader epoch): torch and torchvision live
# here only, never in the package's dependencies. Pillow writes the benchmark's JPEGs.
$(BENCH_STAMP):
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q $(BENCH_PIP)
	@touch $(BENCH_STAMP)

$(STAMP): pyproject.toml | system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

# The editable install runs fsmount from this checkout: compile it once, so that no command
# compiles ~120 modules at every start (where PYTHONDONTWRITEBYTECODE=1 nothing would ever keep
# them; that was 0.1 s of every `fsmount mount`). Only changed files are compiled again.
bytecode: $(STAMP)
	@$(PY) -m compileall -q -j 0 fsmount cli >/dev/null

lint: $(STAMP)
	$(VENV)/bin/ruff check fsmount cli tests bench
	$(VENV)/bin/mypy

test: system-deps $(STAMP) bytecode lint test-servers
	rm -rf .pytest-tmp  # coreutils rm: pytest's own cleanup recurses, and the deep-tree tests nest 1,100 levels
	$(VENV)/bin/pytest -q -n 3 tests --basetemp=.pytest-tmp

demo: system-deps $(STAMP) bytecode
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

bench: bench-deps $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	@$(PY) -m compileall -q -j 0 fsmount cli >/dev/null
	$(PY) bench/run_all.py

# Put `fsmount` on the system PATH (systemd units and mount.fuse3 look in /usr/local/bin)
# and install the unit files. Run as root.
install: system-deps $(STAMP) bytecode
	install -d $(BINDIR) $(CONFDIR) $(UNITDIR)
	ln -sf $(CURDIR)/$(VENV)/bin/fsmount $(BINDIR)/fsmount
	install -m 0644 systemd/fsmount@.service $(UNITDIR)/fsmount@.service
	install -m 0644 systemd/example.conf $(CONFDIR)/example.conf.sample
	@if [ -d $(SYSTEMD_RUN) ]; then systemctl daemon-reload && echo ">> systemd reloaded: enable a mount with 'systemctl enable --now fsmount@NAME'"; \
	  else echo ">> installed; systemd is not running here (not PID 1), so nothing was reloaded: the unit is ready for when it is; meanwhile mount with 'fsmount mount' or /etc/fstab"; fi

clean:
	rm -rf $(VENV) $(BENCH_VENV) build *.egg-info .pytest_cache .ruff_cache
