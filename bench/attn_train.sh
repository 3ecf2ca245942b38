#!/usr/bin/env bash
# The training engine's attention op alone (src/train/ops.c, mn_op_attn_fwd/bwd), SmolLM2-135M's
# heads (9 query heads, 3 KV heads, head size 64), causal over N prefix cells + T batch rows: the best
# of R runs of forward and backward, in ms. Shapes: the UIO step of bench/train.sh (segment 256 +
# 32 memory tokens over 96 earlier memory slots) and the 1,280-token distillation window.
#   bash bench/attn_train.sh [THREADS] [R]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/libmnemo.a ] || make --no-print-directory all >/dev/null
mkdir -p build/bench
gcc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc -Isrc/core -pthread bench/attn_train.c build/libmnemo.a \
  -lopenblas -lsqlite3 -lpq -lmicrohttpd -lcjson -lm $(pkg-config --libs ompi-c 2>/dev/null) -o build/bench/attn_train
TH=${1:-2}
R=${2:-20}
for shape in "288 96" "1024 0" "1280 0" "2048 0"; do
  set -- $shape
  build/bench/attn_train "$1" "$2" "$TH" "$R"
done
