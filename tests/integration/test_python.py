#!/usr/bin/env python3
"""The Python package (python/mnemo): installed from this checkout into the project's venv (pip runs
setup.py, which builds the C library with `make shared`), then its pytest suite (python/tests), which
holds the package against the CLI and the server's shapes. Prints one "N passed, N failed, N skipped"
line like the C tests, naming each failure and skip.

The package loads the -O2 shared library, not the sanitized build: in the sanitized pass of
`make test` its suite is a named skip (it ran in the first pass)."""
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAME = "test_python.py"

if os.environ.get("MN_SANITIZED"):
    print("SKIP %s: the package loads the -O2 library (make shared); its suite ran in the unsanitized pass" % NAME)
    print("%s: 0 passed, 0 failed, 1 skipped" % NAME)
    sys.exit(0)

py = sys.executable
inst = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-build-isolation", ROOT],
                      cwd=ROOT, capture_output=True, text=True)
if inst.returncode:
    print("FAIL %s: pip install of the package failed:\n%s" % (NAME, (inst.stdout + inst.stderr)[-3000:]))
    print("%s: 0 passed, 1 failed, 0 skipped" % NAME)
    sys.exit(1)

with tempfile.TemporaryDirectory() as d:
    xml = os.path.join(d, "junit.xml")
    # from the repository root (the tests' texts, adapter and CLI), the installed package imported
    env = dict(os.environ, MNEMO_CLI=os.path.join(ROOT, "build", "mnemo"))
    r = subprocess.run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml", xml,
                        os.path.join(ROOT, "python", "tests")], cwd=ROOT, env=env, capture_output=True, text=True)
    passed = failed = skipped = 0
    if os.path.exists(xml):
        for case in ET.parse(xml).getroot().iter("testcase"):
            name = case.get("name")
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
                print("FAIL %s: %s" % (NAME, name))
            elif case.find("skipped") is not None:
                skipped += 1
                print("SKIP %s: %s: %s" % (NAME, name, case.find("skipped").get("message", "")))
            else:
                passed += 1
    if r.returncode not in (0, 1) or (r.returncode == 1 and not failed) or passed + failed == 0:
        failed += 1
        print("FAIL %s: pytest exited %d:\n%s" % (NAME, r.returncode, (r.stdout + r.stderr)[-3000:]))
    elif failed:
        print(r.stdout[-6000:])
    print("%s: %d passed, %d failed, %d skipped" % (NAME, passed, failed, skipped))
    sys.exit(1 if failed else 0)
