#!/usr/bin/env bash
# mnemo vs llama.cpp on the default model, same machine, same run: prefill 512, decode 128,
# 2 threads, peak RSS. Installs llama-cpp-python from source if missing (several minutes).
# AMX is disabled in that build: ggml's AMX path crashes on VMs that report AMX without
# enabling it; the AVX-512/VNNI kernels are what llama.cpp uses for this model anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
make --no-print-directory all >/dev/null
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
T=${T:-2}; P=${P:-512}; N=${N:-128}; R=${R:-3}; OUT=${OUT:-bench/last-run.jsonl}
: > "$OUT"
if ! python3 -c "import llama_cpp" 2>/dev/null; then
  echo "bench: installing llama-cpp-python==0.3.36 (source build)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX_VNNI=ON \
    -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_BF16=ON \
    -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
    python3 -m pip install --quiet llama-cpp-python==0.3.36
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%F)"
for i in 1 2; do  # alternate the two engines so drift in machine load hits both
  ./mnemo bench -m "$MODEL" -p "$P" -n "$N" -t "$T" -r "$R" --json | tee -a "$OUT"
  python3 bench/llamacpp_bench.py -m "$MODEL" -p "$P" -n "$N" -t "$T" -r "$R" | tee -a "$OUT"
done
