# Two commands do all the set-up on a fresh machine:
#   make demo   -- quantize the bundled default model with real data and print the fp32/symmetric/hybrid table
#   make test   -- lint (ruff, import-linter layer contract) and the whole test suite (what CI runs)
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
APT_PKGS := g++-aarch64-linux-gnu g++-riscv64-linux-gnu qemu-user fonts-dejavu-core
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean apt assets boards

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $(STAMP)

apt:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

setup: apt $(STAMP)

assets: setup
	$(VPY) -m arq_bench.assets fetch-all
	$(VPY) -c 'from arq_bench import zoo; zoo.fetch_mnist()'

demo: setup assets
	$(VPY) -m arq_bench demo

# emulated aarch64 / riscv64 / riscv64+V boards: qemu-user >= 8 and the board runtimes (cached in
# ~/.cache/tvm_arq/boards; the riscv64 cross-build takes minutes once, later runs take seconds)
boards: setup
	bash scripts/setup_boards.sh $(VPY) $$(nproc)

test: setup assets boards lint
	$(VPY) -m pytest -q -n auto --dist worksteal --durations=25 tests

lint: setup
	$(VENV)/bin/ruff check tvm_arq arq_bench tests scripts tutorials
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache
