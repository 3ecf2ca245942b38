#!/usr/bin/env bash
# The recipe of the reader: a decoder LoRA that answers from the exact segments recall pages
# back (docs/RESULTS.md, "A reader for recall"). SmolLM2-135M reads a stated detail back from
# a short passage about a third of the time; this teaches it on passages of the training
# books (data/val's books left out) with one detail each, asked as a question.
#   Data: scripts/make_reader_data.py, PAIRS (3000) pairs from passages of 600-3,500
#     characters (about 150-900 tokens), seed 2: 85 % synthetic statements (counts, names,
#     colours, years about invented places; LIST_SHARE 0.4 of them with two or three counts,
#     one asked for), 15 % counts the books state themselves; INLINE_SHARE 0.5 of the pairs
#     with the passage inside the user's message.
#   Training: `mnemo finetune --qa` on the passages alone (a throw-away store, group
#     "reader"): LoRA rank 8 (alpha 16) on the decoder's Q, K, V and O, the loss on the answer's
#     tokens only, batch 1, lr 1e-3, warmup 10, cosine over STEPS (500) steps.
#   Output: runs/reader.gguf (OUT); it ships as <adapter>.reader.gguf beside the adapter it was
#     chosen with once a validation run says it helps.
#   (SEED=1 LIST_SHARE=0 INLINE_SHARE=0: the first reader's data; see make_reader_data.py.)
# Environment: PAIRS, STEPS, OUT, SEED, LIST_SHARE, INLINE_SHARE, THREADS, MODEL, ADAPTER, MNEMO (the binary),
# WORK (the scratch folder).
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${PAIRS:-3000}
STEPS=${STEPS:-500}
OUT=${OUT:-runs/reader.gguf}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
ADAPTER=${ADAPTER:-adapters/SmolLM2-135M-Instruct.uio.gguf}
work=${WORK:-runs/reader-work}
mkdir -p "$work" "$(dirname "$OUT")"
python3 scripts/make_reader_data.py --out "$work/qa.jsonl" --pairs "$PAIRS" --min-chars 600 --max-chars 3500 \
  --seed "${SEED:-2}" --list-share "${LIST_SHARE:-0.4}" --inline-share "${INLINE_SHARE:-0.5}"
rm -rf "$work/store.db" "$work/store.db.mem"
# the store only carries the group and its record; the passages are the group's texts
${MNEMO:-./mnemo} finetune --db "$work/store.db" -a "$ADAPTER" -m "$MODEL" --group reader --qa "$work/qa.jsonl" --qa-mix 1 \
  --steps "$STEPS" --segments 10 --eval-every 0 --targets qkvo --rank 8 --alpha 16 --lr 1e-3 --warmup 10 \
  ${THREADS:+-t "$THREADS"} -o "$OUT"
