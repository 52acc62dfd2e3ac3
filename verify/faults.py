"""``make faults``: every fault case (online, streaming, batch) in one run and one table.

Each module also runs alone (``python -m verify.faults_online`` and so on) with its own
options; this runs each with its defaults and then prints their checks together.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable

from harness.report import RESULTS_DIR, Check, table, write_json

MODULES = ("faults_online", "faults_stream", "faults_batch")


def main() -> int:
    codes = []
    for name in MODULES:
        print(f"== {name} ==", flush=True)
        module_main: Callable[[list[str]], int] = importlib.import_module(f"verify.{name}").main
        codes.append(module_main([]))
    checks = [
        Check(**c)
        for name in MODULES
        for c in json.loads((RESULTS_DIR / f"{name}.json").read_text())["checks"]
    ]
    print("== all faults ==")
    print(table(checks))
    print(f"wrote {write_json('faults', checks)}")
    return max(codes)


if __name__ == "__main__":
    raise SystemExit(main())
