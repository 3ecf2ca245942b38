#!/usr/bin/env bash
# The cost of exact recall (issue 27's targets), in one run on one machine: a decoded token at 32K and
# 128K tokens read into memory with recall (auto K: 8 segments at these lengths) against a decoded token
# at 8,192 cells of full attention; the question's selection and page-in against one decode step.
#   full    mnemo bench -p 512 -d 8192 -n 64: decode after 8,192 tokens of context (full attention)
#   recall  mnemo ask --doc BOOK --max-tokens N --recall auto --max-memory 3840 -n 64 --row: the row
#           has recall_select_seconds, recall_page_seconds, decode_seconds_per_token and every part of
#           the cache (memory bounded to its newest 3,840 slots so 128K stays within the 8K positions)
# Output: the bench JSON line and the ask rows, on stdout.
#   SIZES="32768 131072" THREADS=2 bash bench/recall_cost.sh > docs/results/recall/cost.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x ./mnemo ] || make --no-print-directory mnemo >/dev/null
BIN=$(mktemp /tmp/mnemo-bench-XXXXXX)   # a private copy: rebuilding ./mnemo does not disturb a long run
cp ./mnemo "$BIN" && chmod 755 "$BIN"
ROWS=$(mktemp /tmp/mnemo-rows-XXXXXX)
trap 'rm -f "$BIN" "$ROWS"' EXIT
BOOK=${BOOK:-data/eval/books/pg14851.txt}
SIZES=${SIZES:-"32768 131072"}
THREADS=${THREADS:-2}
Q=${Q:-"What happened to the narrator at the end of the story? Tell it in detail."}
"$BIN" bench -p 512 -d 8192 -n 64 -t "$THREADS" --json
for n in $SIZES; do
  "$BIN" ask --doc "$BOOK" --max-tokens "$n" --recall auto --max-memory 3840 -n 64 -t "$THREADS" -q \
    --row "$ROWS" "$Q" >/dev/null
done
cat "$ROWS"
