"""The batch job under SIGKILL: killed mid-run, then re-run, a day's output stays whole.

    python -m verify.faults_batch [--budget ROWS] [--seed N]

``python -m batch score`` runs as a real process over the project's data. It is
SIGKILLed after a seeded number of its part files are written, twice: once on a day
that has no output yet, once while replacing a complete partition. After each kill
the day holds nothing or the old partition, untouched; after each re-run it holds
every transaction of the day exactly once, and the second re-run's scores equal the
first's. A reader polls the partition all along, through the directory it opened, and
must never see a partition whose manifest disagrees with its files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from batch.output import is_complete, partition_dir, read_manifest
from core.settings import PROJECT_ROOT, Settings
from harness.models import champion_dir_or_exit
from harness.report import RESULTS_DIR, Check, table, write_json

WAIT_S = 300.0


def busiest_recent_day(settings: Settings) -> tuple[date, pd.DataFrame]:
    """The latest day with at least half the busiest day's rows (the data's last day is
    cut short at generation time), and its transactions."""
    tx = pd.read_parquet(settings.data_dir / "transactions.parquet")
    days = tx.event_timestamp.dt.date
    counts = days.value_counts()
    day = max(d for d, c in counts.items() if c >= counts.max() / 2)
    return day, tx[days == day]


def expected_ids(rows: pd.DataFrame, budget: int) -> set[str]:
    """What ``--limit budget`` selects: the day's first rows by (time, transaction_id)."""
    ordered = rows.sort_values(["event_timestamp", "transaction_id"])
    return set(ordered.transaction_id.head(budget))


def read_partition(partition: Path) -> pd.DataFrame:
    files = sorted(partition.glob("part-*.parquet"))
    if not files:
        return pd.DataFrame(columns=["transaction_id", "score"])
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


class PartitionReader(threading.Thread):
    """Reads the day's partition every few ms, as a consumer would, through one open
    directory descriptor per read (a path lookup per file could straddle the swap and
    mix two partitions). A read that finds the manifest disagreeing with the files is torn,
    unless its directory is no longer the one published (the swapped-out old partition,
    deleted while read); reads finding no partition at all, once there was one, are absent."""

    def __init__(self, partition: Path) -> None:
        super().__init__(daemon=True)
        self.partition = partition
        self.reads = self.torn = self.swapped_out = self.absent = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            time.sleep(0.005)
            try:
                fd = os.open(self.partition, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                self.absent += self.reads > 0
                continue
            try:
                self.reads += 1
                if not is_complete(Path(f"/proc/self/fd/{fd}")):
                    try:
                        current = os.stat(self.partition).st_ino
                    except FileNotFoundError:
                        current = -1
                    swapped = os.fstat(fd).st_ino != current
                    self.swapped_out += swapped
                    self.torn += not swapped
            finally:
                os.close(fd)

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def score_cmd(root: Path, day: date, budget: int, chunks: int, workers: int) -> list[str]:
    chunk_rows = -(-budget // chunks)
    return [sys.executable, "-m", "batch", "score", "--output", str(root), "--date",
            day.isoformat(), "--limit", str(budget), "--chunk-rows", str(chunk_rows),
            "--workers", str(workers)]  # fmt: skip


def batch_env(settings: Settings) -> dict[str, str]:
    env = os.environ | {
        "FEATURE_REPO": str(settings.feature_repo),
        "REDIS_CONNECTION_STRING": settings.redis_connection_string,
    }
    if settings.model_dir is not None:
        env["MODEL_DIR"] = str(settings.model_dir)
    return env


def kill_after(
    cmd: list[str], env: dict[str, str], staging_glob: str, root: Path, parts: int
) -> int:
    """Run ``cmd``; SIGKILL it once ``parts`` part files are staged. The files staged at
    the kill, or -1 if the run ended first."""
    proc = subprocess.Popen(
        cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + WAIT_S
    while (staged := len(list(root.glob(staging_glob)))) < parts:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            return -1
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return staged


def rerun_checks(
    case: str, root: Path, day: date, cmd: list[str], env: dict[str, str], want: set[str]
) -> tuple[list[Check], pd.DataFrame]:
    """Re-run to the end; the day's partition must hold each wanted transaction once."""
    done = subprocess.run(
        cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=WAIT_S
    )
    partition = partition_dir(root, day)
    got = read_partition(partition)
    ids = got.transaction_id
    dups = int(ids.duplicated().sum())
    missing, extra = len(want - set(ids)), len(set(ids) - want)
    left = [p.name for p in root.iterdir() if p.name.startswith(".")]
    error = (done.stderr.strip().splitlines() or [""])[-1]
    return [
        Check(case, "re-run exit code", str(done.returncode) if done.returncode == 0
              else f"{done.returncode}: {error}", done.returncode == 0),
        Check(case, "rows after the re-run", f"{len(got)} of {len(want)}",
              len(got) == len(want) and missing == 0 and extra == 0),
        Check(case, "duplicate transaction_ids", str(dups), dups == 0),
        Check(case, "partition complete (manifest = files = rows)",
              "yes" if is_complete(partition) else "NO", is_complete(partition)),
        Check(case, "staging or set-aside dirs left", str(len(left)), not left),
    ], got  # fmt: skip


def run(
    settings: Settings,
    workdir: Path,
    budget: int = 3000,
    seed: int = 6,
    chunks: int = 20,
    workers: int = 1,
) -> list[Check]:
    """Both kills (a fresh day, then a published day) and their re-runs; ``budget`` rows of
    the day in ``chunks`` part files, each kill after a seeded 1..chunks-2 of them."""
    day, rows = busiest_recent_day(settings)
    want = expected_ids(rows, budget)
    budget = len(want)
    root = workdir / "scores"
    shutil.rmtree(root, ignore_errors=True)
    env = batch_env(settings)
    cmd = score_cmd(root, day, budget, chunks, workers)
    staged = f".tmp-date={day.isoformat()}-*/part-*.parquet"
    partition = partition_dir(root, day)
    rng = np.random.default_rng(seed)
    chunks = -(-budget // -(-budget // chunks))  # as the job splits them
    if chunks < 3:
        raise ValueError(f"{budget} rows in {chunks} part files leave no room for a kill mid-run")
    first_kill, second_kill = (int(k) for k in rng.integers(1, chunks - 1, size=2))

    case = "batch score SIGKILL on a new day + re-run"
    at = kill_after(cmd, env, staged, root, first_kill)
    checks = [
        Check(case, "killed after (part files staged)", f"{at} of {chunks} (seed {seed})",
              at > 0),
        Check(case, "partition visible after the kill", "none" if not partition.exists()
              else "YES, a partial one", not partition.exists()),
    ]  # fmt: skip
    more, first = rerun_checks(case, root, day, cmd, env, want)
    checks += more

    case = "batch score SIGKILL over a published day + re-run"
    before = read_manifest(partition)
    reader = PartitionReader(partition)
    reader.start()
    try:
        at = kill_after(cmd, env, staged, root, second_kill)
        after = read_manifest(partition)
        kept = after == before and is_complete(partition)
        checks += [
            Check(case, "killed after (part files staged)", f"{at} of {chunks} (seed {seed})",
                  at > 0),
            Check(case, "published partition after the kill",
                  "unchanged, complete" if kept else "CHANGED", kept),
        ]  # fmt: skip
        more, second = rerun_checks(case, root, day, cmd, env, want)
    finally:
        reader.stop()
    replaced = read_manifest(partition) != before
    merged = first.merge(second, on="transaction_id", suffixes=("_1", "_2"))
    diff = float(np.max(np.abs(merged.score_1 - merged.score_2))) if len(merged) else np.nan
    return checks + more + [
        Check(case, "re-run replaced the partition", "yes" if replaced else "NO", replaced),
        Check(case, "max |score difference| vs the first complete run", f"{diff:.1e}",
              len(merged) == len(want) and diff == 0.0),
        Check(case, "reads that saw a torn partition (during kill + re-run)",
              f"{reader.torn} of {reader.reads} ({reader.swapped_out} had the old one deleted "
              f"mid-read, {reader.absent} found none)", reader.torn == 0 and reader.reads > 0),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verify.faults_batch", description=__doc__)
    parser.add_argument("--budget", type=int, default=10**6, help="rows of the day (default: all)")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--chunks", type=int, default=20, help="part files per run")
    parser.add_argument("--workers", type=int, default=1, help="chunks scored in parallel")
    args = parser.parse_args(argv)
    settings = Settings()
    champion_dir_or_exit(settings)
    workdir = RESULTS_DIR / "faults_batch-work"
    checks = run(settings, workdir, args.budget, args.seed, args.chunks, args.workers)
    print(table(checks))
    conditions = vars(args) | {"cores": os.cpu_count()}
    print(f"wrote {write_json('faults_batch', checks, {'conditions': conditions})}")
    if all(c.ok for c in checks):
        shutil.rmtree(workdir, ignore_errors=True)
        return 0
    print(f"outputs kept in {workdir}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
