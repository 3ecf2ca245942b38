#!/usr/bin/env bash
# The recipe of the shipped adapter (adapters/SmolLM2-135M-Instruct.uio.gguf), run or continued:
# a UIO compressor for SmolLM2-135M-Instruct trained on data/train/books only.
#   segment 256, 64 / 32 memory tokens (ratios 4 and 8 sampled per step), the previous segment
#   kept raw beside the memory (--recent 1), LoRA rank 64 (alpha 256) on the encoder's Q, V and
#   the transfer head's K, V; windows of 5 segments (1,280 tokens); next-token loss plus KL to
#   the model reading the raw window; unbiased truncated BPTT (tau 2); AdamW, lr 1e-3, warmup
#   10, cosine over 180 steps (the shipped run planned 320 and was re-planned to 180 at step 32).
# The run checkpoints every 10 steps to runs/uio-r1.gguf.ckpt and continues from it when it is
# there (kill it at any time; run this again to go on; the shipped run read the same books from a
# copy outside the repository, so continuing its own checkpoint needs TRAIN_DATA set to that glob).
# At the end the adapter is written at ratio 8 to adapters/. Takes hours on two cores: run it niced in the background.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
OUT=runs/uio-r1.gguf
SHIP=adapters/SmolLM2-135M-Instruct.uio.gguf
THREADS=${THREADS:-$(nproc)}
mkdir -p runs
[ -f runs/uio-init.gguf ] || ./mnemo adapter init -m "$MODEL" --compressor uio --segment 256 --ratio 4 \
  --rank 64 --alpha 256 --recent 1 -o runs/uio-init.gguf
resume=()
[ -f "$OUT.ckpt" ] && resume=(--resume "$OUT.ckpt")
nice -n 10 ./mnemo train -m "$MODEL" -a runs/uio-init.gguf --data "${TRAIN_DATA:-data/train/books/*.txt}" -o "$OUT" \
  --segment 256 --segments 5 --ratios 4,8 --bptt unbiased --tau 2 --distill --steps 180 --warmup 10 --lr 1e-3 \
  --eval-every 40 --eval-windows 6 --ckpt-every 10 -t "$THREADS" "${resume[@]}" 2>&1 | tee -a runs/train-uio.log
./mnemo adapter set -m "$MODEL" "$OUT" --ratio 8 -o "$SHIP"
