#!/usr/bin/env bash
# Runs every test program of $1/tests (one per tests/test_*.c) and the integration tests, adds up
# their "N passed, N failed[, N skipped]" lines and closes with the total alone on its line:
#   tests: N passed, N failed, N skipped
# after naming every skip and the CPU features the run had. A test program that is missing, not
# executable, or ends without its summary line (a crash) counts as a failure. Exit status is
# non-zero on any failure.
set -u
build=${1:-build}
export MNEMO_BIN="$build/mnemo"
total_pass=0; total_fail=0; total_skip=0; skips=()
# Integration tests (tests/integration/test_*.py) print the same line; they run with the project's venv.
py=python3; [ -x .cache/venv/bin/python ] && py=.cache/venv/bin/python
programs=()
for src in tests/test_*.c; do programs+=("$build/tests/$(basename "$src" .c)"); done
t_start=$SECONDS
for t in "${programs[@]}" tests/integration/test_*.py; do
  t0=$SECONDS
  case "$t" in
    *.py) [ -f "$t" ] || continue; out=$("$py" "$t" 2>&1); rc=$? ;;
    *) if [ ! -f "$t" ] || [ ! -x "$t" ]; then
         echo "  FAIL $t: the test program is $([ -f "$t" ] && echo "not executable" || echo "missing") (make $t)"
         total_fail=$((total_fail+1)); continue
       fi
       out=$("$t" 2>&1); rc=$? ;;
  esac
  printf '%s\n' "$out" | grep -E '^FAIL|^SKIP|passed, [0-9]+ failed' | sed "s|^|  |"
  while IFS= read -r s; do [ -n "$s" ] && skips+=("$s"); done < <(printf '%s\n' "$out" | grep -E '^SKIP ')
  line=$(printf '%s\n' "$out" | grep -E '[0-9]+ passed, [0-9]+ failed' | tail -1)
  p=$(printf '%s' "$line" | sed -nE 's/.* ([0-9]+) passed.*/\1/p'); f=$(printf '%s' "$line" | sed -nE 's/.* ([0-9]+) failed.*/\1/p')
  k=$(printf '%s' "$line" | sed -nE 's/.* ([0-9]+) skipped.*/\1/p')
  if [ -z "$line" ] || { [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; }; then
    echo "  CRASH $t (exit $rc)"; printf '%s\n' "$out" | tail -20; p=${p:-0}; f=$(( ${f:-0} + 1 ))
  fi
  total_pass=$((total_pass+p)); total_fail=$((total_fail+f)); total_skip=$((total_skip+${k:-0}))
  # The time each program takes is what keeps CI inside its limit: say it where CI logs show it.
  echo "  time $t: $((SECONDS-t0)) s"
done
echo "time ($build): $((SECONDS-t_start)) s for every program"
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | tr ' ' '\n' | grep -xE 'avx2|fma|f16c|avx512f|avx512bw|avx512_vnni|avx512_bf16|amx_tile|amx_bf16' | tr '\n' ' ')
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //'), $(nproc) cores; features: ${flags:-none of avx2/avx512/amx}"
if [ "${#skips[@]}" -gt 0 ]; then
  echo "skipped ($build):"
  for s in "${skips[@]}"; do echo "  $s"; done
fi
echo "tests: $total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]
