"""What feature logging costs the API: latency with FEATURE_LOG_DIR off and on, same run.

    python -m bench.bench_feature_log [--requests 3000] [--clients 4]

One uvicorn worker (`python -m serving`) over a benchmark workspace, alternately without
and with feature logging (off, on, off, on), each answering the same single-record
/v1/predict requests from ``--clients`` threads on loopback. Also times one background
flush of 5000 rows through Feast's ``write_logged_features`` against a plain
``pyarrow.parquet`` write of the same table, the hand-written alternative.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq

from core.settings import PROJECT_ROOT
from core.store import feature_service, open_store
from datagen.generate import GeneratorConfig
from harness.report import RESULTS_DIR as RESULTS
from harness.servers import launched, serving_command
from harness.workspace import prepare
from serving.feature_log import FLUSH_S, FeatureLog
from serving.online import OnlineRead, RequestRow

PORT = 18210


def load(url: str, requests: int, clients: int, users: int) -> dict[str, float]:
    """Latency percentiles (ms) of ``requests`` single-record predictions."""
    bodies = [
        {
            "user_id": i % users,
            "merchant_id": i % 97,
            "amount": 42.0,
            "channel": "pos",
            "country": "GB",
        }
        for i in range(requests)
    ]

    def one(client: httpx.Client, body: dict[str, object]) -> float:
        began = time.perf_counter()
        client.post("/v1/predict", json=body).raise_for_status()
        return (time.perf_counter() - began) * 1000

    with httpx.Client(base_url=url, timeout=30) as client:
        for body in bodies[:200]:  # warm-up
            one(client, body)
        time.sleep(FLUSH_S + 1)  # the first flush (it imports Feast's ibis writer) is behind us
        began = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            latencies = list(pool.map(lambda b: one(client, b), bodies))
        wall = time.perf_counter() - began
    ms = np.array(latencies)
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(statistics.fmean(latencies), 3),
        "requests_per_s": round(requests / wall, 1),
    }


def flush_costs(ws_env: dict[str, str], logs: Path) -> dict[str, float]:
    """One 5000-row flush: Feast's write_logged_features vs pyarrow alone."""
    os.environ.update(ws_env)
    from core.settings import Settings

    settings = Settings()
    store = open_store(settings)
    service = feature_service(store)
    flog = FeatureLog(store, service, logs / "feast")
    names = flog.columns
    rows, read = _request(names, 5000)
    one_row, one_read = _request(names, 1)
    calls = 10_000
    began = time.perf_counter()
    for _ in range(calls):  # what one request pays
        flog.record(one_row, one_read, time.time())
    record_us = (time.perf_counter() - began) / calls * 1e6
    table = flog.to_table([(rows, read, time.time())])
    out: dict[str, float] = {"record_call_us": round(record_us, 2)}
    for name, write in (
        (
            "feast_write_logged_features_ms",
            lambda: store.write_logged_features(table, flog.service),
        ),
        (
            "pyarrow_write_table_ms",
            lambda: pq.write_table(table, logs / f"pa-{time.time_ns()}.parquet"),
        ),
    ):
        runs = []
        for _ in range(5):
            began = time.perf_counter()
            write()
            runs.append((time.perf_counter() - began) * 1000)
        out[name] = round(statistics.median(runs), 1)
    began = time.perf_counter()
    flog.to_table([(rows, read, time.time())])
    out["build_table_5000_rows_ms"] = round((time.perf_counter() - began) * 1000, 1)
    flog.close()
    return out


def _request(
    names: list[tuple[str, str, str | None]], n: int
) -> tuple[list[RequestRow], OnlineRead]:
    read = OnlineRead(
        columns={feature: [1.0] * n for _, feature, _ in names},
        timestamps={view: [time.time()] * n for _, _, view in names if view},
        stale=[set() for _ in range(n)],
    )
    rows: list[RequestRow] = [
        {"user_id": i, "merchant_id": 1, "amount": 1.0, "channel": "pos", "country": "GB"}
        for i in range(n)
    ]
    return rows, read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    cfg = GeneratorConfig(days=3, txns_per_day=5000, users=2000)
    redis_db = int(os.environ.get("BENCH_REDIS_DB", "6"))
    ws = prepare("feature-log", cfg, redis_db)
    env = ws.env | {"MODEL_DIR": str(PROJECT_ROOT / "data" / "model"), "LOG_LEVEL": "WARNING"}
    results: dict[str, object] = {"requests": args.requests, "clients": args.clients, "workers": 1}
    with tempfile.TemporaryDirectory() as tmp:
        for run, mode in enumerate(("off", "on", "off", "on")):
            extra = {"FEATURE_LOG_DIR": str(Path(tmp) / "logs")} if mode == "on" else {}
            url = f"http://127.0.0.1:{PORT}"
            log = RESULTS / f"feature-log-{mode}.log"
            cmd = serving_command(PORT)
            with launched(cmd, f"{url}/health", log, env | extra, PROJECT_ROOT):
                key = f"run{run + 1}_logging_{mode}"
                results[key] = load(url, args.requests, args.clients, cfg.users)
            print(f"{key}: {results[key]}", flush=True)
        logged = sum(pq.read_metadata(p).num_rows for p in (Path(tmp) / "logs").rglob("*.parquet"))
        results["rows_logged"] = logged
        results["flush"] = flush_costs(env, Path(tmp))
    print(json.dumps(results, indent=2))
    (RESULTS / "feature_log.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
