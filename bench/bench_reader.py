"""CPU per online read of the API's reader, in process: for A/B runs of ``core.redis_layout``.

    python -m bench.bench_reader [--reads 600] [--runs 5]
    PYTHONPATH=/tmp/before python /work/main/bench/bench_reader.py   # an older tree's code

One row per read (user + merchant: 2 ``HMGET``s, decode, the on-demand transform) through
``serving.online.OnlineFeatureReader`` on the configured Redis (database 13 of a standalone
one). CPU time of this process, not wall time: on a shared, loaded box the wall time swings
tenfold while the CPU per read does not.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import pandas as pd

import core.redis_layout
from core.settings import Settings
from core.store import feature_service, open_store
from datagen.generate import GeneratorConfig
from harness.workspace import prepare
from serving.online import OnlineFeatureReader, redis_client


async def measure(settings: Settings, reads: int, runs: int) -> list[float]:
    store = open_store(settings)
    client = redis_client(settings.redis_connection_string, 1.0)
    reader = OnlineFeatureReader(store, feature_service(store), client)
    tx = pd.read_parquet(settings.data_dir / "transactions.parquet")
    rows = tx[["user_id", "merchant_id", "amount", "channel", "country"]].head(200)
    records = [{str(k): v for k, v in r.items()} for r in rows.to_dict("records")]
    for r in records[:50]:  # warm-up: connections, caches
        await reader.read([r], 1.0)
    out = []
    for _ in range(runs):
        began = time.process_time()
        for i in range(reads):
            await reader.read([records[i % len(records)]], 1.0)
        out.append((time.process_time() - began) / reads * 1e6)
    await client.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reads", type=int, default=600)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--redis-db", type=int, default=13)
    args = parser.parse_args()
    cfg = GeneratorConfig(users=2_000, merchants=200, days=2, txns_per_day=2_000)
    ws = prepare("reader", cfg, args.redis_db)
    per_read = asyncio.run(measure(ws.settings, args.reads, args.runs))
    print(
        f"{core.redis_layout.__file__}: CPU µs per read, best {min(per_read):.1f},"
        f" runs {', '.join(f'{v:.0f}' for v in per_read)}"
    )


if __name__ == "__main__":
    main()
