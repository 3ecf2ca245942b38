#!/usr/bin/env bash
# Makes the plots of docs/results/ from the files there (matplotlib in the project's venv).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .cache/venv/bin/python ] || python3 -m venv .cache/venv
.cache/venv/bin/python -c "import matplotlib" 2>/dev/null || .cache/venv/bin/python -m pip install -q matplotlib
R=docs/results
args=()
[ -f $R/ppl.jsonl ] && args+=(--ppl $R/ppl.jsonl)
[ -f $R/passkey.jsonl ] && args+=(--passkey $R/passkey.jsonl)
[ -f $R/train-uio.log ] && args+=(--train $R/train-uio.log)
[ -f $R/train-uio-r2.log ] && args+=(--train $R/train-uio-r2.log)
[ -f $R/train-uio-r3.log ] && args+=(--train $R/train-uio-r3.log)
[ -f $R/train-beacon-b1.log ] && args+=(--train-beacon $R/train-beacon-b1.log)
.cache/venv/bin/python scripts/plot_results.py $R "${args[@]}"
# the shipped layout (8 raw segments beside the memory): perplexity to 128K, passkeys to 128K
N=$R/recent8
if [ -d $N ]; then
  args=()
  [ -f $N/ppl_long.jsonl ] && args+=(--ppl $N/ppl_long.jsonl)
  if [ -f $N/passkey.jsonl ]; then
    cat $N/passkey.jsonl $N/passkey_long.jsonl 2>/dev/null > $N/.passkey_all.jsonl
    args+=(--passkey $N/.passkey_all.jsonl)
  fi
  .cache/venv/bin/python scripts/plot_results.py $N "${args[@]}"
  rm -f $N/.passkey_all.jsonl
  ls $N/*.png
fi
ls $R/*.png
