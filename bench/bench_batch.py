"""Batch benchmark: our nightly job end to end against Feast's retrieval alone.

    python -m bench.bench_batch [--rows 1000000]     (make bench-batch [ROWS=...])

Generates ``rows`` transactions in one day (plus the day before, so profiles and
windows have history) in a workspace under bench/results/, then measures, each in
its own process (peak RSS from wait4):
  1. ours: ``python -m batch score`` (retrieve + score + write), rows/s and peak RSS;
  2. Feast ``get_historical_features(service).to_df()`` alone on the same entity rows,
     with the DuckDB offline store and with the file offline store;
  3. the floor: DuckDB's bare ASOF join of the same rows against the same sources;
  4. with ``--engine spark``: ``python -m batch score --engine spark`` (Spark local mode),
     its rows/s, the driver's peak RSS (Python driver + JVM, sampled from /proc), the
     session's start-up time, and its rows compared with ours (mismatches must be 0).
Prints a table with ratios and writes bench/results/batch.json and batch.png
(``--engine spark``: bench/results/batch_spark.json).

The data is generated in a child process too: a child's ``ru_maxrss`` from wait4 is
at least its parent's peak RSS (Linux records the forking mm's high-water mark at
exec), so generating 10M rows in this process made ``/bin/true`` "peak" at 3 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from core.cli import UserError
from core.duck import connect
from core.redis_url import with_db
from core.settings import PROJECT_ROOT, Settings
from datagen.generate import GeneratorConfig
from harness.models import champion_dir
from harness.report import RESULTS_DIR as RESULTS
from harness.workspace import create, generate_data

WORKSPACE = RESULTS / "batch-workspace"
REDIS_DB = 13  # retrieval never writes online; a database of its own anyway
COLUMNS = "transaction_id, user_id, merchant_id, amount, channel, country, event_timestamp"


def env_for(repo: Path) -> dict[str, str]:
    return os.environ | {
        "FEATURE_REPO": str(repo),
        "REDIS_CONNECTION_STRING": with_db(Settings().redis_connection_string, REDIS_DB),
        "PYTHONPATH": str(PROJECT_ROOT),
        "MODEL_DIR": str(repo.resolve().parent / "data" / "model"),  # the champion, copied
    }


def run_measured(argv: list[str], env: dict[str, str], timeout: float) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, stdout) of one child process, its RSS from wait4."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv[1:])} exited {proc.returncode}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024, out


def prepare(rows: int, day: date) -> Path:
    ws = create(WORKSPACE, with_db(Settings().redis_connection_string, REDIS_DB))
    repo, data = ws.repo, ws.settings.data_dir
    cfg = GeneratorConfig(
        days=2,
        txns_per_day=rows,
        users=max(5_000, rows // 20),
        merchants=max(500, rows // 200),
        start=datetime.combine(day - timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc),
    )
    t = time.perf_counter()
    generate_data(ws, cfg)
    print(f"  data ({cfg.users} users, {cfg.merchants} merchants): {time.perf_counter() - t:.0f} s")
    ws.feast("apply")
    # The same registry, read through the file offline store.
    file_repo = WORKSPACE / "feature_repo_file"
    shutil.copytree(repo, file_repo)
    yaml = (file_repo / "feature_store.yaml").read_text()
    (file_repo / "feature_store.yaml").write_text(yaml.replace("type: duckdb", "type: file"))
    shutil.copytree(model_dir(), data / "model")
    return repo


def model_dir() -> Path:
    """The project's champion; trained on the default data first on a fresh clone."""
    try:
        return champion_dir(Settings())
    except UserError:
        print("  no champion in the project's registry: running `make data apply train` first")
    subprocess.run(["make", "data", "apply", "train"], cwd=PROJECT_ROOT, check=True)
    return champion_dir(Settings())


def probe(kind: str, day: date) -> None:
    """Child-process side: one retrieval measured from entity rows in memory to result."""

    from core.settings import get_settings
    from core.store import feature_service, open_store

    settings = get_settings()
    data = settings.data_dir
    con = connect()
    start = datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc)
    end = start + timedelta(days=1)
    where = f"event_timestamp >= '{start.isoformat()}' AND event_timestamp < '{end.isoformat()}'"
    entities = f"(SELECT {COLUMNS} FROM read_parquet('{data}/transactions.parquet') WHERE {where})"
    if kind == "asof":
        t = time.perf_counter()
        table = con.sql(
            f"SELECT e.*, u.* EXCLUDE (user_id, event_timestamp, created_timestamp),"
            f" m.* EXCLUDE (merchant_id, event_timestamp, created_timestamp),"
            f" w.* EXCLUDE (user_id, event_timestamp) FROM {entities} e"
            f" ASOF LEFT JOIN read_parquet('{data}/user_profile.parquet') u"
            f"  ON e.user_id = u.user_id AND e.event_timestamp >= u.event_timestamp"
            f" ASOF LEFT JOIN read_parquet('{data}/merchant_profile.parquet') m"
            f"  ON e.merchant_id = m.merchant_id AND e.event_timestamp >= m.event_timestamp"
            f" ASOF LEFT JOIN read_parquet('{data}/user_txn_windows.parquet') w"
            f"  ON e.user_id = w.user_id AND e.event_timestamp >= w.event_timestamp"
        ).to_arrow_table()
    else:
        frame = con.sql(f"SELECT * FROM {entities}").df()
        store = open_store(settings)
        service = feature_service(store)
        t = time.perf_counter()
        table = store.get_historical_features(entity_df=frame, features=service).to_df()
    print(json.dumps({"seconds": time.perf_counter() - t, "rows": len(table)}))


def spark_startup() -> None:
    """Child-process side: seconds from nothing to a Spark session that ran one task."""
    t = time.perf_counter()
    from batch.spark_input import session
    from core.settings import get_settings

    spark = session(get_settings())
    spark.range(1).count()
    print(json.dumps({"seconds": time.perf_counter() - t}))
    spark.stop()


def tree_rss_mb(root: int) -> dict[str, float]:
    """RSS (MB) of ``root`` and its descendants by role: the Python driver, the JVM (in local
    mode the driver and the executors), and the executors' Python workers."""
    parents: dict[int, int] = {}
    rss: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = dict(
                line.split(":", 1) for line in (entry / "status").read_text().splitlines()
            )
        except (OSError, ValueError):
            continue
        pid = int(entry.name)
        parents[pid] = int(status["PPid"])
        kb = float(status.get("VmRSS", "0 kB").split()[0])
        rss[pid] = (status["Name"].strip(), kb / 1024)
    out = {"driver": 0.0, "jvm": 0.0, "workers": 0.0}
    for pid, (name, mb) in rss.items():
        up = pid
        while up not in (root, 0, 1) and up in parents:
            up = parents[up]
        if up != root:
            continue
        role = "driver" if pid == root else "jvm" if name == "java" else "workers"
        out[role] += mb
    return out


def run_spark_job(argv: list[str], env: dict[str, str], timeout: float) -> dict[str, float]:
    """Run the Spark job; its wall time and peak RSS per role, sampled every 0.2 s."""
    peak = {"driver": 0.0, "jvm": 0.0, "workers": 0.0, "driver_and_jvm": 0.0}
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL)
    while proc.poll() is None and time.perf_counter() - started < timeout:
        now = tree_rss_mb(proc.pid)
        peak = {k: max(v, now.get(k, now["driver"] + now["jvm"])) for k, v in peak.items()}
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
    if proc.wait():
        raise RuntimeError(f"{' '.join(argv[1:])} exited {proc.returncode}")
    return peak | {"wall": time.perf_counter() - started}


def spark_vs_ours(day: date) -> int:
    """Rows of the Spark engine's partition that differ from ours (DuckDB engine): missing
    or extra transactions, or a score more than 1e-9 apart, or another key column."""
    import pandas as pd

    def rows(root: Path) -> pd.DataFrame:
        files = sorted((root / f"date={day}").glob("part-*.parquet"))
        frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        return frame.drop(columns=["run_id", "scored_at"]).set_index("transaction_id")

    ours, spark = rows(WORKSPACE / "data" / "scores"), rows(WORKSPACE / "scores-spark")
    both = ours.join(spark, how="outer", lsuffix="_d", rsuffix="_s")
    bad = both.score_d.isna() | both.score_s.isna() | ((both.score_d - both.score_s).abs() > 1e-9)
    for col in ("user_id", "merchant_id", "event_timestamp", "model_version"):
        bad |= both[f"{col}_d"] != both[f"{col}_s"]
    return int(bad.sum())


def measure_spark(day: date, env: dict[str, str], out: dict[str, Any], timeout: float) -> None:
    me = [sys.executable, "-m", "bench.bench_batch"]
    env = env | {"SPARK_CONF": env.get("SPARK_CONF", '{"spark.driver.memory": "768m"}')}
    print("spark: start-up")
    _, _, text = run_measured([*me, "_spark_startup"], env, timeout)
    out["spark_startup_s"] = json.loads(text.strip().splitlines()[-1])["seconds"]
    print("spark: python -m batch score --engine spark")
    argv = [sys.executable, "-m", "batch", "score", "--engine", "spark", "--date", str(day)]
    peak = run_spark_job([*argv, "--output", str(WORKSPACE / "scores-spark")], env, timeout)
    manifest = json.loads(
        (WORKSPACE / "scores-spark" / f"date={day}" / "_manifest.json").read_text()
    )
    n = manifest["rows_out"]
    out |= {
        "spark_seconds": manifest["duration_s"],
        "spark_rows_per_s": n / manifest["duration_s"],
        "spark_wall_seconds": peak["wall"],
        "spark_wall_rows_per_s": n / peak["wall"],
        "spark_driver_peak_rss_mb": peak["driver_and_jvm"],
        "spark_python_driver_peak_rss_mb": peak["driver"],
        "spark_jvm_peak_rss_mb": peak["jvm"],
        "spark_python_workers_peak_rss_mb": peak["workers"],
        "spark_partitions": manifest["chunks"],
        "spark_cores": manifest["workers"],
        "spark_vs_duckdb_mismatches": spark_vs_ours(day),
        "spark_note": f"local mode on {os.cpu_count()} cores: a plumbing and correctness proof,"
        " not a speed claim",
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    day = datetime.now(timezone.utc).date() - timedelta(days=1)
    print(f"preparing {args.rows:,} transactions on {day} in {WORKSPACE}")
    me = [sys.executable, "-m", "bench.bench_batch"]
    subprocess.run([*me, "_prepare", str(args.rows), day.isoformat()], cwd=PROJECT_ROOT, check=True)
    repo = WORKSPACE / "feature_repo"
    env = env_for(repo)
    out: dict[str, Any] = {
        "requested_rows": args.rows,
        "day": day.isoformat(),
        "cores": os.cpu_count(),
        # The floor of every peak below: each child's ru_maxrss includes this process's.
        "harness_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }

    print("ours: python -m batch score")
    argv = [sys.executable, "-m", "batch", "score", "--engine", "duckdb", "--date", str(day)]
    wall, rss, _ = run_measured(argv, env, args.timeout)
    manifest = json.loads(
        (WORKSPACE / "data" / "scores" / f"date={day}" / "_manifest.json").read_text()
    )
    n = out["rows"] = manifest["rows_out"]  # datagen adds follow-ups and fraud bursts
    out |= {
        "ours_seconds": manifest["duration_s"],
        "ours_rows_per_s": n / manifest["duration_s"],
        "ours_wall_seconds": wall,  # plus interpreter start and imports
        "ours_wall_rows_per_s": n / wall,
        "ours_peak_rss_mb": rss,
        "ours_chunks": manifest["chunks"],
        "ours_workers": manifest["workers"],
    }
    for kind, repo_dir, skip in (
        ("feast_duckdb", repo, args.rows > args.feast_max_rows),
        ("feast_file", WORKSPACE / "feature_repo_file", args.rows > args.file_max_rows),
        ("duckdb_asof", repo, False),
    ):
        if skip:
            print(f"{kind}: skipped at this size (--feast-max-rows, --file-max-rows)")
            out |= {
                f"{kind}_rows_per_s": None,
                f"{kind}_peak_rss_mb": None,
                f"{kind}_seconds": None,
            }
            out[f"{kind}_error"] = "skipped: would not fit in memory at this size"
            continue
        print(f"{kind}: measuring")
        probe_kind = "asof" if kind == "duckdb_asof" else "feast"
        try:
            _, rss, text = run_measured(
                [*me, "_probe", probe_kind, day.isoformat()], env_for(repo_dir), args.timeout
            )
            got = json.loads(text.strip().splitlines()[-1])
            out |= {
                f"{kind}_seconds": got["seconds"],
                f"{kind}_rows_per_s": got["rows"] / got["seconds"],
                f"{kind}_peak_rss_mb": rss,
            }
        except RuntimeError as exc:
            print(f"  {kind} failed: {exc} (-9: killed, usually by the OOM killer)")
            out |= {
                f"{kind}_rows_per_s": None,
                f"{kind}_peak_rss_mb": None,
                f"{kind}_seconds": None,
            }
            out[f"{kind}_error"] = str(exc)
    if args.engine == "spark":
        measure_spark(day, env, out, args.timeout)
    return out


def report(out: dict[str, Any]) -> None:
    base = out["feast_duckdb_rows_per_s"]
    rows = [
        ("ours (retrieve+score+write)", out["ours_rows_per_s"], out["ours_peak_rss_mb"]),
        ("ours incl. process start", out["ours_wall_rows_per_s"], out["ours_peak_rss_mb"]),
        ("Feast DuckDB store (retrieval)", base, out["feast_duckdb_peak_rss_mb"]),
        (
            "Feast file store (retrieval)",
            out["feast_file_rows_per_s"],
            out["feast_file_peak_rss_mb"],
        ),
        (
            "DuckDB bare ASOF join (floor)",
            out["duckdb_asof_rows_per_s"],
            out["duckdb_asof_peak_rss_mb"],
        ),
    ]
    print(
        f"\n{out['rows']:,} entity rows on {out['day']}, {out['cores']} cores,"
        f" harness peak RSS {out['harness_peak_rss_mb']:,.0f} MB (a floor of every peak)"
    )
    if "spark_rows_per_s" in out:
        rows += [
            ("Spark engine (job, local mode)", out["spark_rows_per_s"], None),
            ("Spark incl. process start", out["spark_wall_rows_per_s"], None),
        ]
    print(f"{'':34} {'rows/s':>12} {'peak RSS MB':>12} {'vs Feast DuckDB':>16}")
    for name, rate, rss in rows:
        ratio = f"{rate / base:.2f}x" if rate and base else "-"
        rate_s = f"{rate:,.0f}" if rate else "-"
        rss_s = f"{rss:,.0f}" if rss else "-"
        print(f"{name:34} {rate_s:>12} {rss_s:>12} {ratio:>16}")
    if "spark_rows_per_s" in out:
        spark_footnote(out)


def spark_footnote(out: dict[str, Any]) -> None:
    workers = out["spark_python_workers_peak_rss_mb"]
    print(
        f"Spark: driver peak RSS {out['spark_driver_peak_rss_mb']:,.0f} MB (Python driver"
        f" {out['spark_python_driver_peak_rss_mb']:,.0f} + JVM; in local mode the JVM also runs"
        f" the executors, whose Python workers took {workers:,.0f} MB more);"
        f" start-up {out['spark_startup_s']:.1f} s; {out['spark_vs_duckdb_mismatches']} rows"
        f" differ from ours.\n{out['spark_note']}."
    )


def chart(out: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["ours", "Feast DuckDB", "Feast file", "DuckDB ASOF"]
    keys = ["ours", "feast_duckdb", "feast_file", "duckdb_asof"]
    if "spark_rows_per_s" in out:
        names, keys = [*names, "Spark (local)"], [*keys, "spark"]
        out = out | {"spark_peak_rss_mb": out["spark_driver_peak_rss_mb"]}
    rates = [out.get(f"{k}_rows_per_s") or 0 for k in keys]
    rss = [out.get(f"{k}_peak_rss_mb") or 0 for k in keys]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].bar(
        names, [r / 1000 for r in rates], color=["C2", "C0", "C1", "C7", "C3"][: len(names)]
    )
    axes[0].set(title=f"Throughput, {out['rows']:,} rows (k rows/s)", ylabel="k rows/s")
    axes[1].bar(names, rss, color=["C2", "C0", "C1", "C7", "C3"][: len(names)])
    axes[1].set(title="Peak RSS (MB)", ylabel="MB")
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=15)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_probe":
        probe(sys.argv[2], date.fromisoformat(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_spark_startup":
        spark_startup()
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_prepare":
        prepare(int(sys.argv[2]), date.fromisoformat(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--file-max-rows", type=int, default=200_000, help="skip the file store above (OOM at 1M)"
    )
    parser.add_argument(
        "--feast-max-rows",
        type=int,
        default=2_000_000,
        help="skip Feast's DuckDB retrieval above (it took 6.6 GB at 1M rows)",
    )
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument(
        "--engine", choices=("duckdb", "spark"), default="duckdb", help="spark: add its rows"
    )
    parser.add_argument("--keep", action="store_true", help="keep the workspace (GBs at 10M rows)")
    args = parser.parse_args()
    out = measure(args)
    report(out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.rows == 1_000_000 else f"-{args.rows}"
    name = f"batch{'_spark' if args.engine == 'spark' else ''}{suffix}"
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2) + "\n")
    chart(out, RESULTS / f"{name}.png")
    print(f"\nwrote {RESULTS / f'{name}.json'} and .png")
    if not args.keep:
        shutil.rmtree(WORKSPACE, ignore_errors=True)


if __name__ == "__main__":
    main()
