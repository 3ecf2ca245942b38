#!/usr/bin/env python3
"""What calling mnemo through Python costs (issue 25's target: under 2 % of the same work through the
CLI), in one run on one machine. The same text is read into memory and the same question asked:

  read  Python: wall time of mnemo.Memory(model, text) (progress=False, and with a progress callback)
        CLI:    `mnemo compress`'s own timing of the same read ("in X s"; model loading excluded,
                as the Python side has its model loaded already)
  ask   Python: wall time of Memory.ask (the answer's 32 tokens, greedy) against the time the library
                itself measured for the call (stats["seconds"], from its start to the last token)
        CLI:    the wall time of `mnemo ask --mem` for the same memory and question, and its own
                report of that time ("... s to first token ...") where it prints one

Prints one JSON line per measurement (median of REPS runs) on stdout:
  .cache/venv/bin/python bench/python_overhead.py [TEXT] > docs/results/python_overhead.jsonl
Run from the repository root after `make python` (the package installed into .cache/venv)."""
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import mnemo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.environ.get("MNEMO_CLI", os.path.join(ROOT, "mnemo"))
TEXT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "data", "val", "pg1082.txt")
BYTES = int(os.environ.get("BYTES", "40000"))
REPS = int(os.environ.get("REPS", "3"))
THREADS = int(os.environ.get("THREADS", "2"))
QUESTION = "Who is the author of this book, and what is it about?"


def machine():
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(), "kernels": mnemo.cpu_isa(),
            "threads": THREADS}


def row(**kw):
    kw = dict(kw, machine=machine(), date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), reps=REPS)
    print(json.dumps(kw), flush=True)


def main():
    with open(TEXT, "rb") as f:
        data = f.read()[:BYTES]
    text = data.decode("utf-8", "ignore")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.txt")
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        m = mnemo.Model(n_threads=THREADS)
        # read: the library's read through Python, and through `mnemo compress`
        py, py_cb, cli = [], [], []
        mem = None
        for _ in range(REPS):
            t0 = time.perf_counter()
            mem = mnemo.Memory(m, text, progress=False, n_threads=THREADS)
            py.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            mnemo.Memory(m, text, progress=lambda done, total: False, n_threads=THREADS).close()
            py_cb.append(time.perf_counter() - t0)
            r = subprocess.run([CLI, "compress", "-f", path, "-o", os.path.join(d, "t.mem"), "-t", str(THREADS)],
                               capture_output=True, text=True, check=True)
            cli.append(float(re.search(r" in ([0-9.]+) s \(", r.stderr).group(1)))
        tokens = mem.info["tokens"]
        mp, mc, mcb = statistics.median(py), statistics.median(cli), statistics.median(py_cb)
        row(task="read", tokens=tokens, python_s=mp, python_progress_s=mcb, cli_s=mc,
            python_over_cli=mp / mc - 1, python_progress_over_cli=mcb / mc - 1)
        # ask: Python's wall time against the library's own time for the call, and the CLI's
        mem.save(os.path.join(d, "t.mem"))
        walls, inner, cli_walls = [], [], []
        for _ in range(REPS):
            st = {}
            t0 = time.perf_counter()
            mem.ask(QUESTION, max_tokens=32, n_threads=THREADS, stats=st)
            walls.append(time.perf_counter() - t0)
            inner.append(st["seconds"])
            t0 = time.perf_counter()
            subprocess.run([CLI, "ask", "--mem", os.path.join(d, "t.mem"), "-n", "32", "-t", str(THREADS), "-q",
                            QUESTION], capture_output=True, text=True, check=True)
            cli_walls.append(time.perf_counter() - t0)
        w, i, c = statistics.median(walls), statistics.median(inner), statistics.median(cli_walls)
        row(task="ask", tokens=tokens, answer_tokens=st["completion_tokens"], python_s=w, library_s=i,
            python_over_library=w / i - 1, cli_process_s=c)


if __name__ == "__main__":
    main()
