#!/usr/bin/env bash
# The recipe ablation of docs/RESULTS.md: UIO adapters for the default model trained from the
# same fresh adapter for the same small budget (STEPS windows of 5 x 256 tokens, the same
# windows in the same order: same seed), changing one thing at a time against the base
# recipe (next-token loss, unbiased tBPTT tau 2, ratio 8, LoRA rank 64, 4 sinks), then
# scored on the same 6 held-out windows of data/train/books at ratio 8. Prints a markdown
# table (also written to docs/results/ablation.md); logs in runs/ablation/.
#   STEPS (24), THREADS (1), ONLY (space-separated config names, default all).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
DATA=${TRAIN_DATA:-data/train/books/*.txt}
STEPS=${STEPS:-24}
T=${THREADS:-1}
BIN=${MNEMO_BIN:-./mnemo}
D=runs/ablation
mkdir -p "$D" docs/results
init() { # NAME RANK: a fresh adapter (validation runs at its ratio, 8)
  [ -f "$D/init-$1.gguf" ] || "$BIN" adapter init -m "$MODEL" --compressor uio --segment 256 --ratio 8 \
    --rank "$2" --alpha $(($2 * 4)) --recent 1 -o "$D/init-$1.gguf" >/dev/null
}
init r64 64
init r16 16
# name | what changes | init | options
configs=(
  "lm|next-token loss only (base)|r64|--bptt unbiased --tau 2 --ratios 8"
  "distill|+ distillation (KL to the model reading the raw window)|r64|--bptt unbiased --tau 2 --ratios 8 --distill"
  "full|+ distillation, exact gradient (bptt full)|r64|--bptt full --ratios 8 --distill"
  "incremental|+ distillation, truncated gradient (incremental, tau 2: tbptt's)|r64|--bptt incremental --tau 2 --ratios 8 --distill"
  "mix48|+ distillation, ratios 4 and 8 drawn per step|r64|--bptt unbiased --tau 2 --ratios 4,8 --distill"
  "mix2-16|+ distillation, ratios 2, 4, 8, 16|r64|--bptt unbiased --tau 2 --ratios 2,4,8,16 --distill"
  "rank16|+ distillation, LoRA rank 16 (alpha 64)|r16|--bptt unbiased --tau 2 --ratios 8 --distill"
  "sinks0|+ distillation, no sink tokens|r64|--bptt unbiased --tau 2 --ratios 8 --distill --sinks 0"
)
for c in "${configs[@]}"; do
  IFS='|' read -r name what ini opts <<<"$c"
  [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]] && continue
  log=$D/$name.log
  grep -q '^wrote ' "$log" 2>/dev/null && continue # done
  # shellcheck disable=SC2086
  "$BIN" train -m "$MODEL" -a "$D/init-$ini.gguf" --data "$DATA" -o "$D/$name.gguf" --segments 5 --steps "$STEPS" \
    --lr 1e-3 --warmup 4 --eval-every "$STEPS" --eval-windows 6 --ckpt-every 0 --seed 1 -t "$T" $opts >"$log" 2>&1
done
{
  echo "| config | what changes | validation loss, ratio 8 | vs no memory | s / step |"
  echo "|---|---|---|---|---|"
  for c in "${configs[@]}"; do
    IFS='|' read -r name what ini opts <<<"$c"
    log=$D/$name.log
    grep -q '^wrote ' "$log" 2>/dev/null || continue
    nomem=$(sed -n 's/.*reading no memory.*: \([0-9.]*\).*/\1/p' "$log" | head -1)
    val=$(grep "^step *$STEPS/$STEPS" "$log" | sed -n 's/.* val \([0-9.]*\) .*/\1/p')
    secs=$(sed -n 's/^wrote .* (\([0-9.]*\) s,.*/\1/p' "$log")
    awk -v n="$name" -v w="$what" -v v="$val" -v b="$nomem" -v s="$secs" -v k="$STEPS" \
      'BEGIN { printf "| %s | %s | %.4f | %+.4f | %.0f |\n", n, w, v, v - b, s / k }'
  done
  echo
  echo "No memory (sinks + the recent raw segment): $(sed -n 's/.*reading no memory.*: \([0-9.]*\).*/\1/p' \
    "$D/lm.log" 2>/dev/null | head -1); untrained adapter (step 0): $(grep '^step *1/' "$D/lm.log" 2>/dev/null |
    sed -n 's/.* val \([0-9.]*\) .*/\1/p'). $STEPS steps x 1,280 tokens each, lr 1e-3, warmup 4, seed 1."
} | tee docs/results/ablation.md
