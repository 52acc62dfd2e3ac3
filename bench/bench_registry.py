"""``python -m bench.bench_registry``: what MLflow's registry costs the modes, beside the floor.

Cold costs run in fresh processes: ``import mlflow``, the first use of a new SQLite store
(MLflow creates its tables with alembic) and of an existing one. Warm costs, per operation:
a watcher's check (one registered-model read for both aliases) beside the ``MODEL_DIR`` check
it replaces (one ``stat`` of the manifest: the floor); a version's first download into the
cache beside a plain directory copy; a registration (run, params, metrics, artifacts, version).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from core.cli import Parser, run_cli
from core.settings import PROJECT_ROOT, Settings
from harness.models import champion_dir_or_exit, private_registry
from harness.report import write_json
from registry.register import register_trained
from registry.store import Registry

FIRST_USE = "c.search_registered_models()"


def _cold(stmt: str, uri: str) -> float:
    """Seconds ``stmt`` takes in a fresh interpreter (``c``: an MlflowClient on ``uri``)."""
    setup = "import time; t = time.perf_counter()"
    if stmt != "import mlflow":  # the client's store opens (and migrates) the database
        setup = (
            "import os; os.environ['MLFLOW_LOGGING_LEVEL'] = 'WARNING'\n"
            f"from mlflow import MlflowClient\n{setup}\nc = MlflowClient({uri!r}, {uri!r})"
        )
    code = f"{setup}\n{stmt}\nprint(time.perf_counter() - t)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT
    )
    return float(out.stdout.strip().splitlines()[-1])


def _per_call_ms(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def measure(workdir: Path, checks: int) -> dict[str, float]:
    settings = private_registry(Settings(), workdir)
    source = champion_dir_or_exit(Settings())  # the project's champion (make train)
    uri = settings.mlflow_tracking_uri or ""
    out = {"import_mlflow_s": _cold("import mlflow", uri)}
    out["first_use_new_store_s"] = _cold(FIRST_USE, uri)  # creates the tables
    out["first_use_existing_store_s"] = _cold(FIRST_USE, uri)

    registry = Registry(settings)
    manifest = json.loads((source / "manifest.json").read_text())
    t = time.perf_counter()
    version = register_trained(settings, source, manifest, {}).version
    out["register_s"] = time.perf_counter() - t
    out["check_registry_ms"] = _per_call_ms(registry.aliases, checks)
    out["check_model_dir_ms (floor)"] = _per_call_ms((source / "manifest.json").stat, checks)
    t = time.perf_counter()
    registry.fetch(version)
    out["first_download_ms"] = (time.perf_counter() - t) * 1000
    copy = workdir / "copy"
    t = time.perf_counter()
    shutil.copytree(source, copy)
    out["copytree_ms (floor)"] = (time.perf_counter() - t) * 1000
    out["cached_fetch_ms"] = _per_call_ms(lambda: registry.fetch(version), checks)
    return out


def _main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        results = measure(Path(tmp), args.checks)
    for name, value in results.items():
        print(f"  {name:<30} {value:10.3f}")
    conditions = {"checks": args.checks, "cpus": os.cpu_count()}
    print(f"wrote {write_json('registry', [], {'results': results, 'conditions': conditions})}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m bench.bench_registry", description=__doc__)
    parser.add_argument(
        "--checks", type=int, default=200, help="repetitions of each warm operation (median)"
    )
    return run_cli(parser, _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
