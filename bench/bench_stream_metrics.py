"""What the stream's per-event histograms cost: ``BulkHistogram.observe_many`` on a micro-batch
against prometheus_client's ``Histogram.observe`` once per event, same values, same buckets.

    python -m bench.bench_stream_metrics [--events 5000] [--repeat 30]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from prometheus_client import CollectorRegistry, Histogram

from streaming.metrics import FRESHNESS_BUCKETS, BulkHistogram


def best_us_per_value(fn: Callable[[], object], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - began)
    return best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="values per micro-batch")
    parser.add_argument("--repeat", type=int, default=30, help="runs; the best is kept")
    args = parser.parse_args()
    values = np.random.default_rng(0).exponential(0.05, args.events).tolist()
    one = Histogram("h", "per event", buckets=FRESHNESS_BUCKETS, registry=CollectorRegistry())
    bulk = BulkHistogram("b", "per batch", FRESHNESS_BUCKETS)

    def per_event() -> None:
        for v in values:
            one.observe(v)

    rows = [
        ("Histogram.observe per event", best_us_per_value(per_event, args.events, args.repeat)),
        (
            "BulkHistogram.observe_many",
            best_us_per_value(lambda: bulk.observe_many(values), args.events, args.repeat),
        ),
    ]
    print(f"{'histogram update':<32} {'µs per event':>12}   ({args.events} events per batch)")
    for name, us in rows:
        print(f"{name:<32} {us:>12.3f}")


if __name__ == "__main__":
    main()
