#!/usr/bin/env bash
# Runs every test program in $1/tests, adds up their "N passed, N failed" lines
# and prints the total as the closing line. Exit status is non-zero on any failure.
set -u
build=${1:-build}
export MNEMO_BIN="$build/mnemo"
total_pass=0; total_fail=0; crashed=0
# Integration tests (tests/integration/test_*.py) print the same line; they run with the project's venv.
py=python3; [ -x .cache/venv/bin/python ] && py=.cache/venv/bin/python
for t in "$build"/tests/test_* tests/integration/test_*.py; do
  [ -f "$t" ] || continue
  case "$t" in *.py) out=$("$py" "$t" 2>&1); rc=$? ;; *) [ -x "$t" ] || continue; out=$("$t" 2>&1); rc=$? ;; esac
  printf '%s\n' "$out" | grep -E 'FAIL|passed|skip' | sed "s|^|  |"
  line=$(printf '%s\n' "$out" | grep -E '[0-9]+ passed, [0-9]+ failed' | tail -1)
  p=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) passed.*/\1/'); f=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
  if [ -z "$line" ] || { [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; }; then
    echo "  CRASH $t (exit $rc)"; printf '%s\n' "$out" | tail -20; crashed=$((crashed+1)); p=${p:-0}; f=$(( ${f:-0} + 1 ))
  fi
  total_pass=$((total_pass+p)); total_fail=$((total_fail+f))
done
echo "tests ($build): $total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
