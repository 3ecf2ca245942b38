#!/usr/bin/env python3
"""scripts/run_tests.sh, the summary every run ends with, on a made-up tree: a test program that
passes with a named skip, one that is not executable, one that is missing, one that crashes
without its summary line. Each of the last three is a failure; the skip is counted and named; the
closing line is "tests: N passed, N failed, N skipped" alone, after the CPU's features.
Prints "N passed, N failed" like the C tests."""
import os
import stat
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_server as ts  # noqa: E402  (the shared check counter)

ROOT = ts.ROOT
SCRIPT = os.path.join(ROOT, "scripts/run_tests.sh")
check = ts.check


def prog(path, body, executable=True):
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    if executable:
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)


with tempfile.TemporaryDirectory() as d:
    os.makedirs(os.path.join(d, "tests"))
    os.makedirs(os.path.join(d, "b/tests"))
    for name in ("test_a", "test_b", "test_c", "test_d"):
        open(os.path.join(d, "tests", name + ".c"), "w").close()
    prog(os.path.join(d, "b/tests/test_a"),
         "echo 'SKIP tests/test_a.c:9: the bf16 products: this CPU has no AVX512_BF16'\n"
         "echo 'tests/test_a.c: 5 passed, 0 failed, 1 skipped'\n")
    prog(os.path.join(d, "b/tests/test_b"), "echo 'tests/test_b.c: 3 passed, 0 failed'\n", executable=False)
    prog(os.path.join(d, "b/tests/test_d"), "echo 'half way'\nexit 139\n")
    r = subprocess.run(["bash", SCRIPT, "b"], cwd=d, capture_output=True, text=True)
    out = r.stdout
    lines = out.strip().split("\n")
    check(r.returncode != 0, f"a failing run exits non-zero ({r.returncode})")
    check(lines[-1] == "tests: 5 passed, 3 failed, 1 skipped", f"the closing line: {lines[-1]!r}")
    check("not executable" in out and "b/tests/test_b" in out, "the non-executable program named:\n" + out)
    check("missing" in out and "b/tests/test_c" in out, "the missing program named:\n" + out)
    check("CRASH b/tests/test_d" in out, "the crash named:\n" + out)
    check("skipped (b):" in out and "no AVX512_BF16" in out, "the skip named:\n" + out)
    check(any(l.startswith("CPU: ") for l in lines), "the CPU line:\n" + out)
    # all well: exit 0
    prog(os.path.join(d, "b/tests/test_b"), "echo 'tests/test_b.c: 3 passed, 0 failed'\n")
    prog(os.path.join(d, "b/tests/test_c"), "echo 'tests/test_c.c: 1 passed, 0 failed, 0 skipped'\n")
    prog(os.path.join(d, "b/tests/test_d"), "echo 'tests/test_d.c: 1 passed, 0 failed'\n")
    r = subprocess.run(["bash", SCRIPT, "b"], cwd=d, capture_output=True, text=True)
    check(r.returncode == 0 and r.stdout.strip().split("\n")[-1] == "tests: 10 passed, 0 failed, 1 skipped",
          "a clean run: " + r.stdout)

# `make run` installs, fetches and builds only what the main job needs (issue 23): its dry run names the
# run-only set-up and the model alone, builds no test program and installs nothing the tests use
r = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True)
out = r.stdout + r.stderr
check(r.returncode == 0 and "scripts/setup.sh run" in out and "fetch_model.sh model" in out,
      "make run's set-up is the main job's:\n" + out[-2000:])
check("build/tests/" not in out and "chromium" not in out and "pip install" not in out and "sanitize" not in out,
      "make run builds no test and installs nothing for the tests:\n" + out[-2000:])

print(f"tests/integration/test_run_tests.py: {ts.passed} passed, {ts.failed} failed")
sys.exit(1 if ts.failed else 0)
