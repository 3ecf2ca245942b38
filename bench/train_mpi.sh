#!/usr/bin/env bash
# Data-parallel training throughput (BENCHMARKS.md "MPI training"): the shipped recipe's windows
# (segment 256, 5 segments, ratios 4 and 8, distillation, unbiased tBPTT) with 2 windows a step,
# trained (a) by one process with 2 threads and (b) by `mpirun -np 2` with 1 thread per rank, each
# for STEPS steps from the same fresh adapter; tokens/s of the last step's running average.
# Usage: bench/train_mpi.sh [STEPS=3]. Needs `make`, scripts/setup.sh (Open MPI) and 2+ cores.
set -euo pipefail
cd "$(dirname "$0")/.."
S=${1:-3}
tmp=$(mktemp -d /tmp/mnemo_bench_mpi.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
./build/mnemo adapter init --compressor uio --segment 256 --ratio 4 --rank 64 --alpha 256 --recent 1 \
  -o "$tmp/init.gguf" >/dev/null 2>&1
args=(--data 'data/train/books/*.txt' --segment 256 --segments 5 --ratios 4,8 --bptt unbiased --tau 2 --distill
      --steps "$S" --batch 2 --eval-every 0 --ckpt-every 0)
./build/mnemo train -a "$tmp/init.gguf" -o "$tmp/warm.gguf" "${args[@]}" --steps 1 -t 2 >/dev/null 2>&1 # token cache
./build/mnemo train -a "$tmp/init.gguf" -o "$tmp/one.gguf" "${args[@]}" -t 2 2> "$tmp/one.log"
mpirun -np 2 --bind-to core ./build/mnemo train -a "$tmp/init.gguf" -o "$tmp/two.gguf" "${args[@]}" -t 1 \
  2> "$tmp/two.log"
one=$(grep '^step' "$tmp/one.log" | tail -1 | sed -E 's/.* ([0-9.]+) tok\/s.*/\1/')
two=$(grep '^step' "$tmp/two.log" | tail -1 | sed -E 's/.* ([0-9.]+) tok\/s.*/\1/')
grep '^step' "$tmp/one.log" | sed 's/^/1 process x 2 threads: /'
grep '^step' "$tmp/two.log" | sed 's/^/2 ranks x 1 thread:    /'
awk -v a="$one" -v b="$two" 'BEGIN {printf "tokens/s: 1 process x 2 threads %.1f, mpirun -np 2 x 1 thread %.1f (%.2fx)\n", a, b, b / a}'
