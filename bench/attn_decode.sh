#!/usr/bin/env bash
# The decode attention row kernels alone (bench/attn_decode.c): one thread, one token's 3 heads over N
# cached rows, f16 and q8_0 caches; JSON rows with ns per row and head and the time a decoded token's
# 30 layers would spend. MNEMO_ISA=avx2 picks the AVX2 variants.
#   bash bench/attn_decode.sh [N ...]   (default 8192 32768)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
[ -f "$BUILD/libmnemo.a" ] || make --no-print-directory BUILD="$BUILD" "$BUILD/libmnemo.a" >/dev/null
mkdir -p "$BUILD/bench"
gcc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc -Isrc/core bench/attn_decode.c "$BUILD/libmnemo.a" \
  -lopenblas -lm -pthread -o "$BUILD/bench/attn_decode"
for n in "${@:-8192 32768}"; do "$BUILD/bench/attn_decode" "$n"; done
