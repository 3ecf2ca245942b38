#!/usr/bin/env bash
# Installs what mnemo needs on a fresh Debian machine; does nothing for what is present.
set -euo pipefail
need=()
for p in gcc make python3 ca-certificates libopenblas-dev libsqlite3-dev libmicrohttpd-dev libcjson-dev; do
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
