"""The `mnemo` command shipped inside the package (mnemo/bin/mnemo, built from the same sources as the
library) and the thin wrappers that run it: evaluate() and train() return the JSON rows the CLI prints,
as dicts; its progress goes to this process's stderr as it comes. `python -m mnemo.server` is
`mnemo serve` (mnemo/server.py)."""
import json
import os
import subprocess
import sys
import threading

_HERE = os.path.dirname(os.path.abspath(__file__))


def cli_path():
    """The packaged `mnemo` command."""
    p = os.path.join(_HERE, "bin", "mnemo")
    if not os.access(p, os.X_OK):
        raise FileNotFoundError("mnemo: the packaged command %s is missing (install the package with pip)" % p)
    return p


def cli_env(args):
    """The command's environment: without -m, the model the package itself would use (the command finds
    the shipped adapters beside it, but the model may live in the package's cache)."""
    env = dict(os.environ)
    if "-m" not in args and not env.get("MNEMO_MODEL"):
        from . import default_model
        env["MNEMO_MODEL"] = default_model()
    return env


def _args(options):
    """--name value for each option: lists comma-joined, True as a bare flag, None and False left out."""
    out = []
    for k, v in options.items():
        if v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-") if len(k) > 1 else "-" + k
        if v is True:
            out.append(flag)
        elif isinstance(v, (list, tuple)):
            out += [flag, ",".join(str(x) for x in v)]
        else:
            out += [flag, str(v)]
    return out


def run_rows(args, progress=True):
    """Runs `mnemo ARGS`; returns the JSON rows of its stdout as dicts. stderr (progress) is copied to
    ours as it comes when progress is true. A failure raises MnemoError with the command's message."""
    from . import MnemoError

    proc = subprocess.Popen([cli_path(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(args))
    tail = []

    def copy_err():
        for line in iter(proc.stderr.readline, b""):
            tail.append(line.decode("utf-8", "replace"))
            del tail[:-20]
            if progress:
                sys.stderr.write(tail[-1])
                sys.stderr.flush()

    t = threading.Thread(target=copy_err, daemon=True)
    t.start()
    rows = []
    try:
        for line in iter(proc.stdout.readline, b""):
            s = line.decode("utf-8", "replace").strip()
            if s.startswith("{"):
                rows.append(json.loads(s))
        rc = proc.wait()
    except BaseException:  # Ctrl-C or an error here: the command stops too
        proc.terminate()
        proc.wait()
        raise
    finally:
        t.join()
    if rc:
        said = [l.strip() for l in tail if l.strip() and not l.startswith("(see ")]
        msg = said[-1] if said else "exit status %d" % rc
        # exit 2: a usage error (EINVAL); anything else: the command failed (ECOMMAND), its message says why
        raise MnemoError(-1 if rc == 2 else -100, msg)
    return rows


def _model_path(model):
    if model is None:
        return None
    return getattr(model, "path", None) or os.fspath(model)


def evaluate(task, model=None, adapter=None, progress=True, **options):
    """`mnemo eval TASK`: "ppl", "passkey", "qa" or "recall", with the CLI's options as keywords
    (lengths=[8192], depths=[10, 50], modes=["memory", "rag"], recall=["auto"], needle="multi",
    haystack=..., books=..., set=..., trials=3, ...). model: a Model or a path; adapter: a path or a
    list of paths. Returns the rows (dicts) the CLI prints."""
    args = ["eval", task]
    mp = _model_path(model)
    if mp:
        args += ["-m", mp]
    for a in ([adapter] if isinstance(adapter, (str, os.PathLike)) else adapter or []):
        args += ["-a", os.fspath(a)]
    return run_rows(args + _args(options), progress)


def train(adapter, data, output, model=None, progress=True, **options):
    """`mnemo train -a ADAPTER --data GLOB -o OUTPUT --json` with the CLI's options as keywords
    (steps=200, segments=4, lr=2e-3, bptt="incremental", resume=..., ...). Returns one row per step
    (step, loss, val_loss, lr, grad_norm, tokens_per_s, ...)."""
    args = ["train", "-a", os.fspath(adapter), "--data", os.fspath(data), "-o", os.fspath(output), "--json"]
    mp = _model_path(model)
    if mp:
        args += ["-m", mp]
    return run_rows(args + _args(options), progress)
