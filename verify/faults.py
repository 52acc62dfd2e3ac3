"""``make faults``: every fault case (online, stream, batch, Redis Cluster, Kafka cluster, a
model promotion and rollback under load) in one table.

    python -m verify.faults

Each module also runs alone (``python -m verify.faults_online`` and so on) with its own
options; this runs each with its defaults and then prints their checks together.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable

from core.cli import Parser, run_cli
from harness.report import RESULTS_DIR, Check, table, write_json

MODULES = (
    "faults_online",
    "faults_stream",
    "faults_batch",
    "faults_redis_cluster",
    "faults_kafka_cluster",
    "rollout",
)


def build_parser() -> argparse.ArgumentParser:
    return Parser(prog="python -m verify.faults", description=__doc__)


def _main(args: argparse.Namespace) -> int:
    codes, checks = [], []
    for name in MODULES:
        print(f"== {name} ==", flush=True)
        result = RESULTS_DIR / f"{name}.json"
        result.unlink(missing_ok=True)  # an earlier run's table must not stand in for this one
        module_main: Callable[[list[str]], int] = importlib.import_module(f"verify.{name}").main
        codes.append(module_main([]))
        if not result.exists():
            checks.append(Check(name, "wrote its checks", "no", False))
            continue
        checks += [Check(**c) for c in json.loads(result.read_text())["checks"]]
    print("== all faults ==")
    print(table(checks))
    print(f"wrote {write_json('faults', checks)}")
    return max(codes)


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
