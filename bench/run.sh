#!/usr/bin/env bash
# mnemo vs llama.cpp on the default model (then on Gemma 3 270M, below), same machine, same run: prefill 512, decode 128, and
# prefill 8,192 / decode at 8,192 of context (llama.cpp with flash attention),
# 2 threads, peak RSS. Installs llama-cpp-python from source if missing (several minutes).
# AMX is disabled in that build: ggml's AMX path crashes on VMs that report AMX without
# enabling it; the AVX-512/VNNI kernels are what llama.cpp uses for this model anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
make --no-print-directory all >/dev/null
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
T=${T:-2}; P=${P:-512}; N=${N:-128}; R=${R:-3}; OUT=${OUT:-bench/last-run.jsonl}
: > "$OUT"
# llama.cpp's SIMD levels from this CPU's flags: a fixed flag such as AVX-VNNI dies with
# "Illegal instruction" on CPUs without it (AMD EPYC has AVX-512 VNNI but not AVX-VNNI).
ggml_flag() { grep -qw "$1" /proc/cpuinfo && echo ON || echo OFF; }
if ! python3 -c "import llama_cpp" 2>/dev/null; then
  echo "bench: installing llama-cpp-python==0.3.36 (source build)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=$(ggml_flag avx) -DGGML_AVX2=$(ggml_flag avx2) \
    -DGGML_FMA=$(ggml_flag fma) -DGGML_F16C=$(ggml_flag f16c) -DGGML_AVX_VNNI=$(ggml_flag avx_vnni) \
    -DGGML_AVX512=$(ggml_flag avx512f) -DGGML_AVX512_VNNI=$(ggml_flag avx512_vnni) \
    -DGGML_AVX512_VBMI=$(ggml_flag avx512vbmi) -DGGML_AVX512_BF16=$(ggml_flag avx512_bf16) \
    -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
    python3 -m pip install --quiet --no-cache-dir llama-cpp-python==0.3.36
fi
# both engines on one model with the same arguments (mnemo's own first: -b, bench's forward batch, is mnemo's only)
both() {
  local m=$1; shift
  ./mnemo bench -m "$m" "$@" --json | tee -a "$OUT"
  local a=() skip=0
  for x in "$@"; do
    if [ $skip = 1 ]; then skip=0; continue; fi
    [ "$x" = -b ] && { skip=1; continue; }
    a+=("$x")
  done
  python3 bench/llamacpp_bench.py -m "$m" "${a[@]}" ${FA:+--flash-attn} | tee -a "$OUT"
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%F)"
for i in 1 2; do both "$MODEL" -p "$P" -n "$N" -t "$T" -r "$R"; done  # alternated: drift in load hits both
# long context: prefill 8,192 tokens, and decode 32 tokens after 8,192 of context; llama.cpp with
# its flash attention (LONG=0 skips these; each takes a minute or two per engine)
if [ "${LONG:-1}" = 1 ]; then
  FA=1 both "$MODEL" -p 8192 -n 32 -d 8192 -t "$T" -r 1
fi
# decode against memory bandwidth, per cache type (CACHE=0 skips): each decoded token reads the weights and the whole
# cache once (the rows say how many bytes; bench/peak.c measures the machine's read bandwidth)
if [ "${CACHE:-1}" = 1 ]; then
  gcc -O3 -std=c11 -pthread bench/peak.c -o build/peak-bench && ./build/peak-bench "$T" | sed -n '/read bandwidth/,$p'
  # CACHE_DEPTHS="8192 32768" adds 32K (its full-attention prefill runs twice, about ten minutes a type)
  for ct in f16 q8_0; do
    for d in ${CACHE_DEPTHS:-8192}; do
      ./mnemo bench -m "$MODEL" -p 512 -n 32 -d "$d" -t "$T" -r 1 --cache-type "$ct" --json | tee -a "$OUT"
    done
  done
fi
# the second model family, Gemma 3 270M (sliding-window layers), when `make model` has fetched it (GEMMA=0 skips):
# 512 and 8,192 as above; GEMMA_32K=1 adds decode after 32,768 of context (llama.cpp's part takes ten minutes),
# mnemo in batches of 512 so that its window layers keep 512 + 512 cells (the cache bytes are in the row)
G=models/gemma-3-270m-q4_k_m.gguf
if [ "${GEMMA:-1}" = 1 ] && [ -f "$G" ]; then
  for i in 1 2; do both "$G" -p "$P" -n "$N" -t "$T" -r "$R"; done
  if [ "${LONG:-1}" = 1 ]; then FA=1 both "$G" -p 8192 -n 32 -d 8192 -t "$T" -r 1; fi
  if [ "${GEMMA_32K:-0}" = 1 ]; then FA=1 both "$G" -p 8192 -n 32 -d 32768 -b 512 -t "$T" -r 1; fi
fi
