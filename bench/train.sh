#!/usr/bin/env bash
# Training throughput on the default model: UIO adapter, segment 256, ratio 8,
# windows of 4 segments, each gradient mode, then a beacon adapter (window 256);
# tokens/s, counted FLOPs per token, achieved GFLOP/s, and model FLOP
# utilisation against the peak measured by bench/peak.sh on the same machine: f32 rows against
# the f32 FMA peak, bf16 rows against the bf16 dot-product peak (the CPU decides which is higher; a bf16 run still does its
# attention, LoRA and row ops in f32, so its MFU understates the kernels' share). Each row in the
# precisions of PRECISIONS (default "bf16 f32": products with the frozen weights in bf16 where the
# CPU has AVX512_BF16 (--bf16), and in f32 (--f32); without either, mnemo train picks bf16 only
# where a start-up timing finds it faster); UIO_MODES and
# BEACON_MODES pick the gradient modes. Ends with the PyTorch baseline's rows (bench/train_torch.py;
# TORCH=0 skips it). Usage: bash bench/train.sh [STEPS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-3}
threads=${2:-$(nproc)}
bin=${MNEMO_BIN:-./build/mnemo} # MNEMO_BIN: another build, to compare in one run
data=${MNEMO_TRAIN_DATA:-data/train/books/*.txt}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -x "$bin" ] || make -s all
peak=""
peak16=""
if [ -f bench/peak.sh ]; then
  # the machine's peaks: the best per-core rate by CPU time (robust to other load) x threads
  probe=$(bash bench/peak.sh "$threads" 2>/dev/null || true)
  peak=$(printf '%s\n' "$probe" | awk -v t="$threads" '$1 != "bf16" && $1 != "amx" && $2 == t && $5 + 0 > best { best = $5 }
                                                    END { if (best) printf "%.1f", best * t }')
  peak16=$(printf '%s\n' "$probe" | awk -v t="$threads" '$1 == "bf16" && $2 == t { printf "%.1f", $5 * t }')
  peakamx=$(printf '%s\n' "$probe" | awk -v t="$threads" '$1 == "amx" && $2 == t { printf "%.1f", $5 * t }')
fi
$bin adapter init --compressor uio --segment 256 --ratio 8 -o "$work/uio.gguf" >/dev/null
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $threads threads, $(date -u +%F)"
echo "peaks (bench/peak.sh, $threads threads): f32 FMA ${peak:-n/a} GFLOP/s, bf16 dot product ${peak16:-n/a} GFLOP/s, AMX bf16 tiles ${peakamx:-n/a} GFLOP/s"
$bin adapter init --compressor beacon --segment 256 --ratio 8 -o "$work/beacon.gguf" >/dev/null
printf '| compressor | mode | precision | tokens/s | GFLOP/token | GFLOP/s | MFU | peak RSS MiB |\n'
printf '|---|---|---|---|---|---|---|---|\n'
row() { # compressor adapter mode precision
  # the rate of the last of $steps steps (the first also tokenises and caches the data)
  log=$($bin train -a "$2" --data "$data" -o "$work/out.gguf" --steps "$steps" --segments 4 \
        --bptt "$3" --tau 2 --eval-every 0 --ckpt-every 0 -t "$threads" --$4 2>&1 || true)
  # without AVX512_BF16 --bf16 is refused: no bf16 row then
  prec=$(printf '%s\n' "$log" | grep -q 'frozen weights: bf16' && echo bf16 || echo f32)
  [ "$prec" != "$4" ] && return 0
  last=$(printf '%s\n' "$log" | grep '^step' | tail -1)
  tps=$(printf '%s' "$last" | sed -n 's/.* \([0-9.]*\) tok\/s.*/\1/p')
  sum=$(printf '%s\n' "$log" | grep '^wrote')
  gft=$(printf '%s' "$sum" | sed -n 's/.*, \([0-9.]*\) GFLOP per window token.*/\1/p')
  gfs=$(printf '%s' "$sum" | sed -n 's/.*, \([0-9.]*\) GFLOP\/s).*/\1/p')
  rss=$(printf '%s' "$sum" | sed -n 's/.*peak RSS \([0-9]*\) MiB.*/\1/p')
  mfu=n/a
  pk=$peak
  [ "$4" = bf16 ] && pk=$peak16
  printf '%s\n' "$log" | grep -q 'frozen weights: bf16.*AMX' && pk=$peakamx && set -- "$1" "$2" "$3" "bf16 (AMX)"
  [ -n "$pk" ] && [ -n "$gfs" ] && mfu=$(awk -v a="$gfs" -v p="$pk" 'BEGIN { printf "%.0f%%", 100 * a / p }')
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$3" "$4" "$tps" "$gft" "$gfs" "$mfu" "$rss"
}
for mode in ${UIO_MODES:-full tbptt incremental reservoir unbiased}; do
  for p in ${PRECISIONS:-bf16 f32}; do row uio "$work/uio.gguf" $mode $p; done
done
# beacons: window 256, ratio 8; incremental does not apply to their recurrent chain
for mode in ${BEACON_MODES:-full tbptt reservoir unbiased}; do
  for p in ${PRECISIONS:-bf16 f32}; do row beacon "$work/beacon.gguf" $mode $p; done
done
# the PyTorch baseline in the same run (bench/train_torch.py sets up torch and peft in
# .cache/torchvenv on first use, several GB); TORCH=0 skips it
if [ "${TORCH:-1}" != 0 ]; then
  python3 bench/train_torch.py --threads "$threads" --steps "$steps" | grep '^| pytorch'
fi
