#!/usr/bin/env bash
# What `--exact kv` costs and saves against `--exact tokens` (issue 27, item 2), one run at a time on one
# machine, the two forms alternated REPS times:
#   ask --doc BOOK --max-tokens N -n 1 --exact F --row: reading (the kv form adds a decoder pass over
#     each compressed segment), the page-in of the segments recall chooses (decoding their ids against
#     copying their 8-bit cells) and the time to the first answer token;
#   compress --exact F then ask --mem: the memory file's size and the time to the first token from it
#     (ask --mem keeps every slot: past about 16K tokens of SmolLM2 it exceeds the model's 8,192
#     positions and says so; the row then has ttft_s null).
# Output: the rows (JSON, one a line) on stdout as they come.
#   SIZES="8192 32768" REPS=2 bash bench/exact_kv.sh > docs/results/recall/exact_kv_cost.log
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x ./mnemo ] || make --no-print-directory mnemo >/dev/null
BIN=$(mktemp /tmp/mnemo-bench-XXXXXX)   # a private copy: rebuilding ./mnemo does not disturb a long run
cp ./mnemo "$BIN" && chmod 755 "$BIN"
WORK=$(mktemp -d /tmp/mnemo-exactkv-XXXXXX)
trap 'rm -rf "$BIN" "$WORK"' EXIT
BOOK=${BOOK:-data/val/pg1082.txt}
SIZES=${SIZES:-"8192 32768"}
REPS=${REPS:-2}
THREADS=${THREADS:-2}
Q=${Q:-"What did the narrator do after the storm?"}
echo "# exact kv against tokens: $(date -u +%FT%TZ), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'),"\
     "$(nproc) cores, threads $THREADS, book $BOOK"
for n in $SIZES; do
  for r in $(seq "$REPS"); do
    for f in tokens kv; do
      "$BIN" ask --doc "$BOOK" --max-tokens "$n" -n 1 -t "$THREADS" -q --exact "$f" --row "$WORK/rows.jsonl" "$Q" \
        >/dev/null
      tail -1 "$WORK/rows.jsonl"
    done
  done
  head -c $((n * 4)) "$BOOK" > "$WORK/doc.txt"   # about n tokens of the book for the memory files
  for f in tokens kv; do
    "$BIN" compress -f "$WORK/doc.txt" -o "$WORK/$f.mem" --exact "$f" -t "$THREADS" 2> "$WORK/compress.txt"
    secs=$(sed -n 's/.* in \([0-9.]*\) s (.*/\1/p' "$WORK/compress.txt" | head -1)
    cells=$(sed -n 's/.*the cells took \([0-9.]*\) s.*/\1/p' "$WORK/compress.txt")
    for r in $(seq "$REPS"); do
      t=$("$BIN" ask --mem "$WORK/$f.mem" -n 1 -t "$THREADS" "$Q" 2>&1 >/dev/null |
          sed -n 's/.*; \([0-9.]*\) s to first token.*/\1/p' || true)
      echo "{\"task\": \"ask --mem\", \"tokens_of_book\": $n, \"exact\": \"$f\", \"file_bytes\": $(stat -c %s "$WORK/$f.mem"),"\
           "\"compress_s\": ${secs:-null}, \"cells_s\": ${cells:-0}, \"ttft_s\": ${t:-null}}"
    done
  done
done
