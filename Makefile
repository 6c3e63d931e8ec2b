# pydp — build, set-up, demo, tests and benchmarks.
# Every target is idempotent: on a machine that has everything it takes seconds.

SHELL       := /bin/bash
VENV        := .venv
PY          := $(VENV)/bin/python
APT_PKGS    := clang llvm libbpf-dev libbpf1 bpftool iproute2 iperf3 tshark dnsutils \
               socat curl iputils-ping tcpdump ethtool busybox-static python3-venv python3-dev gcc \
               etcd-server etcd-client
ARCH_INC    := /usr/include/$(shell uname -m)-linux-gnu
BPF_SRCS    := $(wildcard bpf/*.bpf.c)
BPF_OBJS    := $(patsubst bpf/%.bpf.c,build/bpf/%.bpf.o,$(BPF_SRCS))
BPF_HDRS    := $(wildcard bpf/lib/*.h maps/*.h)
BPF_CFLAGS  := -O2 -g -target bpf -Wall -Werror -D__TARGET_ARCH_x86 -I. -Ibpf -idirafter $(ARCH_INC)
NATIVE_SRCS := $(wildcard native/*.c)
NATIVE_LIB  := build/native/libpydp_native.so
PYTEST_ARGS ?=

.PHONY: all setup deps venv bpf native demo test lint unit bench clean

all: setup

setup: deps venv bpf native

# apt packages: installed only when one is missing.
deps: build/.deps
build/.deps: Makefile
	@mkdir -p build
	@missing=""; for p in $(APT_PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "apt: installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml build/.deps
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

bpf: $(BPF_OBJS)
build/bpf/%.bpf.o: bpf/%.bpf.c $(BPF_HDRS) build/.deps
	@mkdir -p build/bpf
	clang $(BPF_CFLAGS) -c $< -o $@

# Host code the control plane calls through cffi (ABI mode): the Maglev fill loop.
native: $(NATIVE_LIB)
$(NATIVE_LIB): $(NATIVE_SRCS) build/.deps
	@mkdir -p build/native
	gcc -O2 -Wall -Werror -fPIC -shared $(NATIVE_SRCS) -o $@

demo: setup
	$(PY) -m pydp.demo

# mypy cannot follow setuptools' package-dir mapping through an editable
# install, so it checks a link tree shaped like the installed package.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@rm -rf build/typecheck && mkdir -p build/typecheck/pydp
	@for f in pydp/*; do ln -s $(CURDIR)/$$f build/typecheck/pydp/; done
	@ln -s $(CURDIR)/loader build/typecheck/pydp/loader
	@ln -s $(CURDIR)/maps build/typecheck/pydp/maps
	cd build/typecheck && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml \
		--cache-dir $(CURDIR)/build/.mypy_cache -p pydp

unit: setup
	$(VENV)/bin/pytest -q tests/unit tests/layout $(PYTEST_ARGS)

test: setup lint
	$(VENV)/bin/pytest -q -rs tests $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/pytest -q -p no:randomly bench $(PYTEST_ARGS)
	$(PY) -m bench.report bench/results

clean:
	rm -rf build
