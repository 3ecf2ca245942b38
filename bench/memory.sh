#!/usr/bin/env bash
# Long-context ingestion: time per token and KV bytes for each mode at several lengths, on one eval
# book, 2 threads (mnemo ppl --mode ... --json: every token after the first is read and scored).
# A fresh (untrained) UIO adapter is used for memory mode: this measures cost, not quality.
set -euo pipefail
cd "$(dirname "$0")/.."
make --no-print-directory all >/dev/null
BOOK=${BOOK:-../shared/data/eval/books/pg16215-jack-sheppard.txt}
SIZES=${SIZES:-"8192 32768"}
AD=${AD:-/tmp/mnemo-bench-uio8.gguf}
[ -f "$AD" ] || ./mnemo adapter init --compressor uio --ratio 8 -o "$AD" >/dev/null 2>&1
for n in $SIZES; do
  ./mnemo ppl -f "$BOOK" --max-tokens "$n" --mode memory -a "$AD" --json -t 2
  ./mnemo ppl -f "$BOOK" --max-tokens "$n" --mode sinks --window 1024 --json -t 2
  if [ "$n" -le 8192 ]; then ./mnemo ppl -f "$BOOK" --max-tokens "$n" --mode full --ctx "$n" --json -t 2; fi
done
