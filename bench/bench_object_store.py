"""What the commit protocol costs: one day of scores written, committed and read back on a
local disk (directory swap) and on the devservices s3proxy (manifest PUT last), beside the
floor on each (the same files written and read with pyarrow alone, no protocol).

``python -m bench.bench_object_store [--rows N] [--parts P] [--repeat R]``; starts (or
reuses) s3proxy; writes ``bench/results/object_store.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from batch import output
from core import storage
from core.settings import Settings
from devservices.s3proxy import client_env, ensure_s3proxy
from harness.report import Check, table, write_json

DAY = date(2026, 1, 1)


def scores(rows: int) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table(
        {
            "transaction_id": pa.array([f"tx-{i:012d}" for i in range(rows)]),
            "user_id": pa.array(rng.integers(0, 100_000, rows)),
            "merchant_id": pa.array(rng.integers(0, 5_000, rows)),
            "score": pa.array(rng.random(rows)),
            "model_version": pa.array(["v1"] * rows),
        }
    )


def ours(root: str, parts: list[pa.Table], run: int, commits: list[float] | None = None) -> None:
    stage = output.begin(root, DAY, f"r{run}")
    files = []
    for i, part in enumerate(parts):
        name = f"part-{i:05d}.parquet"
        stage.write_table(name, part)
        files.append({"name": name, "rows": part.num_rows})
    rows = sum(p.num_rows for p in parts)
    began = time.perf_counter()
    stage.commit({"status": "complete", "run_id": f"r{run}", "rows_out": rows, "files": files})
    if commits is not None:
        commits.append(time.perf_counter() - began)


def floor(root: str, parts: list[pa.Table], run: int) -> None:
    directory = storage.join(root, f"floor/run{run}")
    if not storage.is_s3(directory):
        storage.make_dirs(directory)
    for i, part in enumerate(parts):
        fs, path = storage.filesystem(storage.join(directory, f"part-{i:05d}.parquet"))
        pq.write_table(part, path, filesystem=fs)


def read_ours(root: str) -> int:
    table = output.read_day(root, DAY)
    return 0 if table is None else table.num_rows


def read_floor(root: str, run: int) -> int:
    fs, path = storage.filesystem(storage.join(root, f"floor/run{run}"))
    return int(ds.dataset(path, format="parquet", filesystem=fs).to_table().num_rows)


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def measure(root: str, parts: list[pa.Table], repeat: int) -> dict[str, float]:
    run = iter(range(10_000))
    commits: list[float] = []
    return {
        "write_commit_s": timed(lambda: ours(root, parts, next(run), commits), repeat),
        "commit_only_s": statistics.median(commits),
        "write_floor_s": timed(lambda: floor(root, parts, next(run)), repeat),
        "read_s": timed(lambda: read_ours(root), repeat),
        "read_floor_s": timed(lambda: read_floor(root, repeat), repeat),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_object_store", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--parts", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    settings = Settings()
    ensure_s3proxy(settings)
    os.environ.update(client_env(settings))
    table_ = scores(args.rows)
    step = -(-args.rows // args.parts)
    parts = [table_.slice(i, step) for i in range(0, args.rows, step)]
    prefix = f"s3://fraud-bench/{uuid.uuid4().hex[:10]}"
    storage.make_dirs("s3://fraud-bench")
    results: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results["local"] = measure(tmp, parts, args.repeat)
        results["s3proxy"] = measure(f"{prefix}/scores", parts, args.repeat)
    finally:
        storage.delete_tree(prefix)
    checks = [
        Check(f"{where}, {args.rows} rows in {args.parts} files", measure_, f"{value:.3f} s", True)
        for where, figures in results.items()
        for measure_, value in figures.items()
    ]
    print(table(checks))
    write_json("object_store", checks, {"rows": args.rows, "parts": args.parts, **results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
