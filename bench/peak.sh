#!/usr/bin/env bash
# Builds and runs the fp32 FMA and bf16 dot-product peak probe (bench/peak.c): GFLOP/s per core and
# in total, 1 thread and all cores (or the thread count given), AVX-512, AVX2 and AVX512_BF16.
# Usage: bash bench/peak.sh [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build/bench
gcc -O3 -std=c11 -Wall -Wextra -pthread bench/peak.c -o build/bench/peak
exec ./build/bench/peak "$@"
