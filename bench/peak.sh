#!/usr/bin/env bash
# Builds and runs the fp32 FMA peak probe (bench/peak.c): GFLOP/s per core and
# in total, 1 thread and all cores (or the thread count given), AVX-512 and AVX2.
# Usage: bash bench/peak.sh [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build/bench
gcc -O3 -std=c11 -Wall -Wextra -pthread bench/peak.c -o build/bench/peak
exec ./build/bench/peak "$@"
