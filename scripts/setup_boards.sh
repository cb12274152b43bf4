#!/usr/bin/env bash
# Set up emulated dev boards for tvm_arq (idempotent; `make boards` runs it):
#   1. qemu-user >= 8 (QEMU 7.x aborts on some RISC-V vector instructions, e.g. vfncvt.rtz): when the
#      distribution's own qemu-user is older, it comes from the distribution's backports suite, added
#      next to the existing Debian sources (same mirror, same signing key);
#   2. the board runtimes + our RPC server, fetched/built once and cached outside the repo
#      (python -m tvm_arq.deploy.boards setup; the riscv64 cross-build takes minutes the first time).
# Usage: scripts/setup_boards.sh [PYTHON] [JOBS]
set -euo pipefail
PY="${1:-.venv/bin/python}"
JOBS="${2:-$(nproc)}"

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi

qemu_major() {
  local v
  v="$(qemu-riscv64 --version 2>/dev/null | head -n1 | sed -n 's/.*version \([0-9]*\)\..*/\1/p')"
  echo "${v:-0}"
}

if [ "$(qemu_major)" -lt 8 ]; then
  . /etc/os-release
  src=/etc/apt/sources.list.d/debian.sources
  bp=/etc/apt/sources.list.d/tvm-arq-backports.sources
  if [ "${ID:-}" = debian ] && [ -f "$src" ] && [ -n "${VERSION_CODENAME:-}" ]; then
    if [ ! -f "$bp" ]; then
      echo "qemu-user $(qemu_major).x is too old for RVV: adding ${VERSION_CODENAME}-backports"
      # first stanza of the existing sources, with the backports suite
      awk -v suite="${VERSION_CODENAME}-backports" 'BEGIN { RS = ""; } NR == 1 {
          n = split($0, l, "\n");
          for (i = 1; i <= n; i++) { if (l[i] ~ /^#/) continue; if (l[i] ~ /^Suites:/) l[i] = "Suites: " suite; print l[i] }
        }' "$src" | $SUDO tee "$bp" >/dev/null
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      -t "${VERSION_CODENAME}-backports" qemu-user >/dev/null
  else
    echo "warning: qemu-user $(qemu_major).x may abort on RISC-V vector code; install qemu-user >= 8" >&2
  fi
fi
echo "qemu: $(qemu-riscv64 --version | head -n1)"

"$PY" -m tvm_arq.deploy.boards setup --arch all --jobs "$JOBS"
