"""python -m mnemo.server [options]: the server `mnemo serve` starts (the packaged command, the same
options: --db, --port, --api-key, --slots, ...; see --help)."""
import os
import sys

from .cli import cli_env, cli_path


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    exe = cli_path()
    os.execve(exe, [exe, "serve", *argv], cli_env(argv))


if __name__ == "__main__":
    main()
