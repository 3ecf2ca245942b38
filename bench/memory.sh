#!/usr/bin/env bash
# Long-context ingestion + answer: read the first N tokens of an eval book, then generate 64 tokens,
# for each way of holding the context, in one run on the same machine:
#   full      plain context of N + 64 cells (past SmolLM2's 8192 trained positions it is timing only)
#   sinks     attention sinks (4) + recent window of 1024 (StreamingLLM)
#   uio       memory mode, UIO adapter, segment 1024, ratio 8, 4 raw sinks
#   beacon    memory mode, Activation Beacon adapter, window 1024, ratio 8, interleave,
#             full-coverage, 4 raw sinks
#   uio-cap, beacon-cap  the same with --max-memory $CAP (newest CAP slots kept: flat cost)
# Adapters are fresh (untrained): this measures cost (time, RSS, KV bytes), not quality.
# Memory modes get a context of N/8 + 1300 cells, i.e. they too run past the trained positions
# beyond ~56K tokens (the position budget at ratio 8 with W = 1024).
# Output: one JSON line per run (stdout), from `mnemo generate -v`: prompt_s is the ingestion time,
# gen_s the 64-token answer, kv_bytes the cache held at the end, peak_rss_kib the process peak.
#   SIZES="8192 32768" MODES="full sinks uio beacon" THREADS=2 bash bench/memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x ./mnemo ] || make --no-print-directory all >/dev/null
# a private copy, so rebuilding ./mnemo during a long run does not disturb it
BIN=$(mktemp /tmp/mnemo-bench-XXXXXX)
cp ./mnemo "$BIN" && chmod 755 "$BIN"
trap 'rm -f "$BIN"' EXIT
BOOK=${BOOK:-data/eval/books/pg16215-jack-sheppard.txt}
SIZES=${SIZES:-"8192 32768 131072"}
MODES=${MODES:-"full sinks uio beacon uio-cap beacon-cap"}
CAP=${CAP:-2048}
THREADS=${THREADS:-2}
FULL_MAX=${FULL_MAX:-32768}
UIO=${UIO:-/tmp/mnemo-bench-uio8.gguf}
BEACON=${BEACON:-/tmp/mnemo-bench-beacon8.gguf}
[ -f "$UIO" ] || "$BIN" adapter init --compressor uio --ratio 8 -o "$UIO" >/dev/null 2>&1
[ -f "$BEACON" ] || "$BIN" adapter init --compressor beacon --ratio 8 --sinks 4 -o "$BEACON" >/dev/null 2>&1
run() { # n mode args...
  local n=$1 mode=$2
  shift 2
  local line
  line=$("$BIN" generate -f "$BOOK" --max-prompt-tokens "$n" -n 64 --ignore-eog --temp 0 -t "$THREADS" -q -v "$@" \
           2>&1 >/dev/null | grep '^mnemo: {' | sed 's/^mnemo: //')
  echo "{\"tokens\": $n, \"mode\": \"$mode\", ${line#\{}"
}
for n in $SIZES; do
  for mode in $MODES; do
    case $mode in
      full) [ "$n" -le "$FULL_MAX" ] && run "$n" full -c $((n + 80)) ;;
      sinks) run "$n" sinks --mode sinks --window 1024 --sinks 4 ;;
      uio) run "$n" uio --mode memory -a "$UIO" --sinks 4 -c $((n / 8 + 1300)) ;;
      beacon) run "$n" beacon --mode memory -a "$BEACON" -c $((n / 8 + 1300)) ;;
      uio-cap) run "$n" uio-cap --mode memory -a "$UIO" --sinks 4 --max-memory "$CAP" -c $((CAP + 1300)) ;;
      beacon-cap) run "$n" beacon-cap --mode memory -a "$BEACON" --max-memory "$CAP" -c $((CAP + 1300)) ;;
    esac
  done
done
