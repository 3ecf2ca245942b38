#!/usr/bin/env bash
# Installs what mnemo needs on a fresh Debian machine; does nothing for what is present.
#   scripts/setup.sh       everything: the build, the tests (PostgreSQL, Open MPI, clang for fuzzing,
#                          Chromium and a Python venv for the server's and the package's tests)
#   scripts/setup.sh run   only what `make run` needs: the compiler and the libraries the build links
set -euo pipefail
mode=${1:-all}
pkgs=(gcc make python3 ca-certificates libopenblas-dev libsqlite3-dev libpq-dev libmicrohttpd-dev libcjson-dev)
[ "$mode" = run ] || pkgs+=(postgresql libopenmpi-dev openmpi-bin clang libclang-rt-14-dev)
need=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
  need+=(python3-pip)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
[ "$mode" = run ] && exit 0
# Integration tests of the server: headless Chromium for the web page (Debian package) and the
# official openai client (PyPI) in a venv under .cache/, each installed only when missing.
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null; then
  echo "setup: apt-get install chromium"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi
if ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv
fi
[ -x .cache/venv/bin/python ] || python3 -m venv .cache/venv
.cache/venv/bin/python -c "import openai" >/dev/null 2>&1 || .cache/venv/bin/python -m pip install -q openai
# The Python package (python/) is built in this venv without isolation (setuptools + wheel) and tested with pytest.
.cache/venv/bin/python -c "import pytest, wheel, setuptools" >/dev/null 2>&1 || \
  .cache/venv/bin/python -m pip install -q pytest wheel "setuptools>=61"
