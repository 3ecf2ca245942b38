#!/usr/bin/env bash
# The inference tiled attention kernel alone (bench/attn_tile.c): GFLOP/s of one thread over a causal
# sweep of N tokens, for each N given (default 1024 4096 8192). MNEMO_ISA=avx2 picks the AVX2 variant.
#   bash bench/attn_tile.sh [N ...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/libmnemo.a ] || make --no-print-directory all >/dev/null
mkdir -p build/bench
gcc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc -Isrc/core bench/attn_tile.c build/libmnemo.a \
  -lopenblas -lm -pthread -o build/bench/attn_tile
for n in "${@:-1024 4096 8192}"; do build/bench/attn_tile "$n"; done
