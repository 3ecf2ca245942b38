"""Builds the C library (libmnemo.so) from the repository's sources with its Makefile and ships it
inside the package as the extension module mnemo/_libmnemo*.so, which mnemo/_lib.py loads with ctypes,
and the `mnemo` command beside it (mnemo/bin/mnemo: python -m mnemo.server, evaluate and train run it),
with the shipped adapters (mnemo/adapters/).
The system packages come first: `make setup` (gcc, OpenBLAS, SQLite, libpq, libmicrohttpd, cJSON)."""
import os
import shutil
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


class MakeSharedLibrary(build_ext):
    def build_extension(self, ext):
        jobs = str(os.cpu_count() or 1)
        subprocess.run(["make", "-C", ROOT, "-j" + jobs, "shared", "mnemo"], check=True)
        out = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.join(os.path.dirname(out), "bin"), exist_ok=True)
        shutil.copyfile(os.path.join(ROOT, "build-pic", "libmnemo.so"), out)
        shutil.copy2(os.path.join(ROOT, "mnemo"), os.path.join(os.path.dirname(out), "bin", "mnemo"))
        # the shipped adapters as package data: Memory() and Store() need no checkout (the default model
        # itself is fetched from PyPI on first use, mnemo/_fetch.py)
        os.makedirs(os.path.join(os.path.dirname(out), "adapters"), exist_ok=True)
        for name in sorted(os.listdir(os.path.join(ROOT, "adapters"))):
            if name.endswith(".gguf"):
                shutil.copyfile(os.path.join(ROOT, "adapters", name), os.path.join(os.path.dirname(out), "adapters", name))
        # where the default model and adapter live when the package was built from a checkout
        info = os.path.join(os.path.dirname(out), "_build_info.py")
        with open(info, "w") as f:
            f.write("# written by setup.py: the checkout this package was built from\nSOURCE_ROOT = %r\n" % ROOT)


# setuptools works in build-py/ (build/ is the Makefile's)
os.makedirs(os.path.join(ROOT, "build-py"), exist_ok=True)
setup(ext_modules=[Extension("mnemo._libmnemo", sources=[])], cmdclass={"build_ext": MakeSharedLibrary},
      options={"build": {"build_base": "build-py"}, "egg_info": {"egg_base": "build-py"}})
