"""``fraud-stream [bytewax.run flags]``: the dataflow, with recovery initialised on first use.

Equivalent to ``python -m bytewax.run streaming.dataflow:get_flow ARGS``; if ``-r DIR`` is
given and DIR is empty, it first runs ``python -m bytewax.recovery DIR 1``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from core.cli import package_version

FLOW = "streaming.dataflow:get_flow"


def recovery_dir(argv: list[str]) -> Path | None:
    for flag in ("-r", "--recovery-directory"):
        if flag in argv[:-1]:
            return Path(argv[argv.index(flag) + 1])
    return None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--version" in args:
        print(f"fraud-stream {package_version()} (bytewax {version('bytewax')})")
        return 0
    if "-h" in args or "--help" in args:  # the flags are bytewax.run's, with its help
        print(__doc__.splitlines()[0].replace("``", ""), flush=True)
    flow = args.pop(0) if args and args[0].startswith(FLOW) else FLOW
    db = recovery_dir(args)
    if db is not None and not any(db.glob("*.sqlite3")):
        db.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "bytewax.recovery", str(db), "1"], check=True)
    os.execv(sys.executable, [sys.executable, "-m", "bytewax.run", flow, *args])


if __name__ == "__main__":
    raise SystemExit(main())
