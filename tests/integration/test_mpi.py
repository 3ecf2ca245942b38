#!/usr/bin/env python3
"""Data-parallel training with Open MPI on this machine (`mpirun -np 2`, one thread per rank).

- 2 ranks x 1 window a step follow the same loss trajectory as 1 process x 2 windows a step;
- a rank killed mid-run makes the whole job fail (non-zero exit, no hang), and `--resume` continues
  from the last checkpoint, here in one process (a run resumes with any number of ranks), landing on
  the uninterrupted run's losses.
Small windows on the default model keep it to about a minute. With MN_SANITIZED=1 only the 2-rank
run is checked (leak detection off: Open MPI keeps allocations until exit by design).
Prints "N passed, N failed" like the C tests."""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.abspath(os.path.join(ROOT, os.environ.get("MNEMO_BIN", "build/mnemo")))
MODEL = os.path.join(ROOT, os.environ.get("MNEMO_MODEL", "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
BOOK = os.path.join(ROOT, "data/train/books/pg4297.txt")
SANITIZED = os.environ.get("MN_SANITIZED") == "1"
STEP = re.compile(r"^step\s+(\d+)/\d+\s+ratio\s+\d+\s+loss ([0-9.]+)", re.M)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_server as ts  # noqa: E402  (the shared check counter)

check = ts.check


def env():
    e = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
             OMPI_MCA_rmaps_base_oversubscribe="1")
    if SANITIZED:
        e["ASAN_OPTIONS"] = "detect_leaks=0"
    return e


# --f32: this is about the arithmetic of data parallelism. With bf16 products (the default where the
# CPU has AVX512_BF16 and they measure faster) the last-bit differences between summing gradients across ranks and within
# one process cross bf16 rounding boundaries at the next step and grow into 1e-3 loss differences;
# tests/test_train.c checks bf16 steps against f32 ones.
def train_args(tmp, out, steps=4, extra=()):
    return [BIN, "train", "-m", MODEL, "-a", os.path.join(tmp, "init.gguf"), "--data", BOOK, "--segments", "3",
            "--steps", str(steps), "--batch", "2", "-t", "1", "--eval-every", "0", "--ckpt-every", "2", "--f32",
            "--cache", os.path.join(tmp, "cache"), "-o", os.path.join(tmp, out), *extra]


def rank_process(pid):
    """A rank: `mnemo train ...` (by its arguments: the process name is "exe" after the start-up re-exec
    that sets OpenBLAS's core type), not mpirun or the shell around it."""
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        return False
    return len(argv) > 1 and os.path.basename(argv[0]) == b"mnemo" and argv[1] == b"train"


def rank_of(pid):
    try:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    for kv in env:
        if kv.startswith(b"OMPI_COMM_WORLD_RANK="):
            return kv.split(b"=", 1)[1].decode()
    return None


def losses(text):
    return {int(s): float(l) for s, l in STEP.findall(text)}


def same(a, b, steps):
    return all(k in a and k in b and abs(a[k] - b[k]) <= 1e-3 * max(1.0, abs(a[k])) for k in steps)


def main():
    if not os.path.exists(MODEL) or not os.path.exists(BIN) or not shutil.which("mpirun"):
        print(f"FAIL mpi tests: model, {BIN} or mpirun missing (make setup installs openmpi-bin)")
        print(f"tests/integration/test_mpi.py: 0 passed, 1 failed")
        return 1
    with tempfile.TemporaryDirectory(prefix="mnemo_mpi_") as tmp:
        r = subprocess.run([BIN, "adapter", "init", "-m", MODEL, "--compressor", "uio", "--segment", "32", "--ratio",
                            "8", "--rank", "4", "-o", os.path.join(tmp, "init.gguf")], capture_output=True, text=True)
        check(r.returncode == 0, "adapter init: " + r.stderr)
        # --bf16 where the CPU has no AVX512_BF16 (MNEMO_ISA=avx2 hides it): one clear error, nothing written
        nb = subprocess.run(train_args(tmp, "nobf16.gguf", 1, ["--bf16"]), cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env=dict(env(), MNEMO_ISA="avx2"))
        check(nb.returncode == 1 and "AVX512_BF16" in nb.stderr and not os.path.exists(os.path.join(tmp, "nobf16.gguf")),
              f"--bf16 without AVX512_BF16 ({nb.returncode}): {nb.stderr[-600:]}")
        two = subprocess.run(["mpirun", "-np", "2", *train_args(tmp, "two.gguf")], cwd=ROOT, capture_output=True,
                             text=True, timeout=600, env=env())
        l2 = losses(two.stderr)
        check(two.returncode == 0 and "over 2 ranks" in two.stderr and len(l2) == 4,
              f"2 ranks train ({two.returncode}): {two.stderr[-2000:]}")
        # without --batch, 2 ranks read one window each: a batch of 2, not an error about the batch
        nob = train_args(tmp, "nobatch.gguf", 1)
        i = nob.index("--batch")
        del nob[i:i + 2]
        r = subprocess.run(["mpirun", "-np", "2", *nob], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env())
        check(r.returncode == 0 and "over 2 ranks: 2 window(s)" in r.stderr, f"mpirun without --batch ({r.returncode}): {r.stderr[-600:]}")
        if SANITIZED:
            print(f"tests/integration/test_mpi.py: {ts.passed} passed, {ts.failed} failed")
            return 1 if ts.failed else 0
        one = subprocess.run(train_args(tmp, "one.gguf"), cwd=ROOT, capture_output=True, text=True, timeout=600)
        l1 = losses(one.stderr)
        check(one.returncode == 0 and len(l1) == 4, f"1 process trains: {one.stderr[-1000:]}")
        check(same(l1, l2, range(1, 5)), f"2 ranks x 1 window = 1 process x 2 windows, step by step: {l1} vs {l2}")
        # a rank killed after the first checkpoint: the job fails, the checkpoint stays
        out = os.path.join(tmp, "killed.gguf")
        # MNEMO_TRAIN_HOLD: rank 0 waits after the checkpoint of step 2 (the other rank in step 3's reduction)
        # until a signal, so both ranks are alive when the test looks for them, however fast the machine trains
        p = subprocess.Popen(["mpirun", "-np", "2", "-x", "MNEMO_TRAIN_HOLD", *train_args(tmp, "killed.gguf")],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=dict(env(), MNEMO_TRAIN_HOLD="1"))
        log = ""
        t0 = time.time()
        while "[held" not in log and time.time() - t0 < 300:
            line = p.stderr.readline()
            if not line:
                break
            log += line
        ranks = subprocess.run(["pgrep", "-f", "killed.gguf"], capture_output=True, text=True).stdout.split()
        victims = [int(x) for x in ranks if rank_process(int(x))]
        check(len(victims) == 2, f"two rank processes found: {victims}")
        # rank 0, the one held: the other waits in step 3's reduction and never writes (a rank 0 that a
        # SIGTERM from mpirun reaches while waiting would stop early and write its adapter, as designed)
        held = [v for v in victims if rank_of(v) == "0"]
        check(len(held) == 1, f"rank 0 among {victims}")
        if held:
            os.kill(held[0], signal.SIGKILL)
        try:
            rest = p.communicate(timeout=120)[1]
        except subprocess.TimeoutExpired:
            p.kill()
            rest = p.communicate()[1]
            check(False, "the job hung after a rank was killed")
        check(p.returncode not in (0, None), f"the job fails when a rank dies ({p.returncode}): {rest[-600:]}")
        check(not os.path.exists(out) and os.path.exists(out + ".ckpt"), "no adapter written, the checkpoint kept")
        res = subprocess.run(train_args(tmp, "killed.gguf", extra=("--resume", out + ".ckpt")), cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
        lr = losses(res.stderr)
        check(res.returncode == 0 and os.path.exists(out), f"--resume in one process finishes: {res.stderr[-800:]}")
        check(min(lr, default=0) >= 3 and same(l1, lr, range(3, 5)),
              f"the resumed run continues where the 2-rank one stopped, on the same losses: {lr} vs {l1}")
    print(f"tests/integration/test_mpi.py: {ts.passed} passed, {ts.failed} failed")
    return 1 if ts.failed else 0


if __name__ == "__main__":
    sys.exit(main())
