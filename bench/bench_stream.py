"""``make bench-stream``: the streaming dataflow against the real broker, in one run.

1. drain: N events pre-loaded into a fresh topic, then the dataflow drains them
   (aggregates, online writes, scoring, score output); events/s from the first to the
   last score on the scores topic, over the whole process lifetime, and the flow's CPU
   microseconds per event (the figure that holds when other work shares the cores).
2. freshness: events produced at --rate ev/s in real time (event time := send time);
   a poller reads sampled users through the Feast SDK until their window row's event
   timestamp reaches the sampled event: p50/p99 of produce -> readable, and of
   produce -> score on the scores topic.
3. naive: per-event ``store.push`` of one row, as Feast's stream-ingestion docs show.
4. writes: one 10k-row batch through the stream's writer, Feast's online_write_batch,
   write_to_online_store and push.

Uses the project's feature repo and model with a Redis database of its own
(--redis-db); profiles are copied there, so enrichment costs what it costs in production.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from confluent_kafka import Producer
from feast.data_source import PushMode
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from core.aggregations import FEATURE_NAMES, UserWindowState, to_us
from core.contract import WINDOWS_PUSH_SOURCE, WINDOWS_VIEW
from core.redis_url import sync_client, with_db
from core.settings import PROJECT_ROOT, Settings
from core.store import open_store
from harness.flow import BATCH_FLOW, FLOW, cluster_commands, flow_env
from harness.kafka import Topics, produce, read_topic
from harness.report import RESULTS_DIR as RESULTS
from streaming.online import OnlineWriter
from streaming.produce import encode


def events(settings: Settings, n: int) -> pd.DataFrame:
    """``n`` events: the synthetic history repeated, each copy one span *earlier* (the flow
    dead-letters event times ahead of the broker's clock as ``future``), ids unique."""
    base = pd.read_parquet(settings.data_dir / "transactions.parquet").drop(columns=["is_fraud"])
    span = base.event_timestamp.max() - base.event_timestamp.min() + timedelta(days=1)
    count = -(-n // len(base))
    copies = []
    for i in range(count):
        c = base.copy()
        c["event_timestamp"] -= span * (count - 1 - i)
        c["transaction_id"] += f"-{i}"
        copies.append(c)
    return pd.concat(copies, ignore_index=True).head(n)


def load_profiles(settings: Settings) -> None:
    store = open_store(settings)
    now = datetime.now(timezone.utc) - timedelta(minutes=1)
    for view, key in (("user_profile", "user_id"), ("merchant_profile", "merchant_id")):
        df = pd.read_parquet(settings.data_dir / f"{view}.parquet")
        df = df.sort_values("event_timestamp").groupby(key).tail(1).assign(event_timestamp=now)
        store.write_to_online_store(view, df)


def preload(settings: Settings, rows: list[dict[Any, Any]], parts: int) -> Topics:
    """Fresh topics with ``rows`` already in the transactions topic."""
    bootstrap = settings.kafka_bootstrap_servers
    topics = Topics.created("bench", bootstrap, parts)
    produce(bootstrap, topics.transactions, (encode(row) for row in rows), parts)
    return topics


def run_to_end(settings: Settings, topics: Topics, workers: int, processes: int) -> float:
    """Wall time of the flow over the whole topic: one process with ``workers`` threads, or
    a Bytewax cluster of ``processes`` single-worker processes (``-i``/``-a``)."""
    if processes > 1:
        commands = cluster_commands(processes)
    else:
        commands = [[sys.executable, "-m", "bytewax.run", BATCH_FLOW, "-w", str(workers)]]
    env = flow_env(settings, settings.kafka_bootstrap_servers, topics)
    began = time.perf_counter()
    procs = [subprocess.Popen(c, cwd=PROJECT_ROOT, env=env) for c in commands]
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"the flow failed: {proc.args!r}")
    return time.perf_counter() - began


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_drain(
    settings: Settings, n: int, workers: int, processes: int, parts: int
) -> dict[str, float]:
    """Drain rate = events / the span from the first to the last score on the scores topic
    (broker timestamps), so process start, the Feast registry and model load are excluded.

    Also the flow's CPU per event (its processes' user+sys time, minus that of the same
    flow over one event): unlike the rates, it barely moves when other work shares the box.
    """
    rows = events(settings, n).to_dict("records")
    cpu = children_cpu_s()
    startup_s = run_to_end(settings, preload(settings, rows[:1], parts), workers, processes)
    startup_cpu_s = children_cpu_s() - cpu
    began = time.perf_counter()
    topics = preload(settings, rows, parts)
    produce_s = time.perf_counter() - began
    cpu = children_cpu_s()
    wall_s = run_to_end(settings, topics, workers, processes)
    flow_cpu_s = children_cpu_s() - cpu - startup_cpu_s
    bootstrap = settings.kafka_bootstrap_servers
    got = read_topic(bootstrap, topics.scores, 120)  # the flow has ended: read to the end
    if len(got) != n:
        dead = read_topic(bootstrap, topics.dlq)
        reason = dict(dead[0].headers() or []).get("reason") if dead else None
        raise SystemExit(f"drain: {len(got)} scores for {n} events (a dead letter: {reason!r})")
    stamps = [m.timestamp()[1] for m in got]
    span_s = (max(stamps) - min(stamps)) / 1000
    return {
        "events": n,
        "scores": len(got),
        "produce_s": produce_s,
        "startup_s": startup_s,
        "wall_s": wall_s,
        "drain_events_per_s": n / max(span_s, 1e-9),
        "drain_wall_events_per_s": n / wall_s,
        "drain_cpu_us_per_event": flow_cpu_s / n * 1e6,
    }


def bench_freshness(
    settings: Settings, rate: float, seconds: float, every: int, poll_ms: float
) -> dict[str, float]:
    # Start from a clean database, so no row the drain wrote is taken for a fresh one.
    sync_client(settings.redis_connection_string).flushdb()
    load_profiles(settings)
    bootstrap = settings.kafka_bootstrap_servers
    topics = Topics.created("bench", bootstrap, 4)
    flow = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", FLOW],
        cwd=PROJECT_ROOT,
        env=flow_env(settings, bootstrap, topics),
    )
    store = open_store(settings)
    rows = events(settings, int(rate * seconds)).to_dict("records")
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    topic = topics.transactions
    # Warm up: the flow is ready once a first event's score comes back.
    producer.produce(topic, encode(rows[0], datetime.now(timezone.utc))[1], b"0")
    producer.flush()
    read_topic(bootstrap, topics.scores, 120, at_least=1)

    pending: dict[int, tuple[int, float]] = {}  # user -> (event ts us, produce wall time)
    readable: list[float] = []
    lock = threading.Lock()
    done = threading.Event()

    def poll() -> None:
        """One SDK read of every pending user per ``poll_ms``: a tight loop of SDK reads
        would take a core from the flow (docs/performance.md, "Benchmark: freshness poller")."""
        refs = [f"{WINDOWS_VIEW}:txn_count_10m"]
        while not done.is_set() or pending:
            time.sleep(poll_ms / 1000)
            with lock:
                users = list(pending)
            if not users:
                continue
            resp = store.get_online_features(
                features=refs, entity_rows=[{"user_id": u} for u in users]
            )
            # The SDK's to_dict() rounds timestamps to seconds; its proto keeps the nanos.
            names = list(resp.proto.metadata.feature_names.val)
            stamps = resp.proto.results[names.index("txn_count_10m")].event_timestamps
            now = time.time()
            with lock:
                for u, ts in zip(users, stamps, strict=True):
                    ts_us = ts.seconds * 1_000_000 + ts.nanos // 1000
                    if u in pending and ts_us >= pending[u][0]:
                        readable.append((now - pending.pop(u)[1]) * 1000)

    poller = threading.Thread(target=poll)
    poller.start()
    began = time.perf_counter()
    for i, row in enumerate(rows):
        now = datetime.now(timezone.utc)
        key, value = encode(row, now)
        producer.produce(topic, value, key)
        if i % every == 0:
            with lock:
                pending.setdefault(int(row["user_id"]), (to_us(now), now.timestamp()))
        if i % 50 == 0:
            producer.poll(0)
            ahead = (i + 1) / rate - (time.perf_counter() - began)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush()
    achieved = len(rows) / (time.perf_counter() - began)
    deadline = time.monotonic() + 30
    while pending and time.monotonic() < deadline:
        time.sleep(0.1)
    done.set()
    with lock:
        pending.clear()
    poller.join()
    scored = read_topic(bootstrap, topics.scores, 60, at_least=len(rows) + 1)
    flow.kill()
    flow.wait()
    lat = []
    for m in scored:
        body = json.loads(m.value() or b"")
        sent = datetime.fromisoformat(body["event_timestamp"]).timestamp() * 1000
        lat.append(m.timestamp()[1] - sent)
    return {
        "rate_target": rate,
        "rate_achieved": achieved,
        "freshness_samples": len(readable),
        "freshness_poll_ms": poll_ms,
        "freshness_p50_ms": float(np.percentile(readable, 50)),
        "freshness_p99_ms": float(np.percentile(readable, 99)),
        "score_latency_p50_ms": float(np.percentile(lat, 50)),
        "score_latency_p99_ms": float(np.percentile(lat, 99)),
    }


def bench_naive(settings: Settings, n: int) -> dict[str, float]:
    store = open_store(settings)
    states: dict[int, UserWindowState] = {}
    rows = events(settings, n).to_dict("records")
    began = time.perf_counter()
    for row in rows:
        state = states.setdefault(row["user_id"], UserWindowState())
        aggs = state.apply(to_us(row["event_timestamp"]), row["amount"], row["merchant_id"])
        df = pd.DataFrame(
            [{"user_id": row["user_id"], "event_timestamp": row["event_timestamp"], **aggs}]
        )
        store.push(WINDOWS_PUSH_SOURCE, df, to=PushMode.ONLINE)
    return {"naive_push_events_per_s": n / (time.perf_counter() - began)}


def bench_writes(settings: Settings, n: int = 10_000) -> dict[str, float]:
    """One ``n``-row batch through each write path (fresh timestamps, so none is skipped)."""
    store = open_store(settings)
    writer = OnlineWriter(store)
    view = store.get_feature_view(WINDOWS_VIEW)
    provider = store._get_provider()
    aggs: dict[str, int | float | None] = {name: 1 for name in FEATURE_NAMES}
    out = {}
    paths = ("stream_writer", "online_write_batch", "write_to_online_store", "push")
    for step, name in enumerate(paths):
        ts = datetime.now(timezone.utc) + timedelta(seconds=step)
        df = pd.DataFrame([{"user_id": u, "event_timestamp": ts, **aggs} for u in range(n)])
        protos: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]]
        protos = [
            (
                EntityKeyProto(join_keys=["user_id"], entity_values=[ValueProto(int64_val=u)]),
                {k: ValueProto(int64_val=1) for k in FEATURE_NAMES},
                ts,
                None,
            )
            for u in range(n)
        ]
        began = time.perf_counter()
        if name == "stream_writer":
            writer.write([(u, to_us(ts), aggs) for u in range(n)])
        elif name == "online_write_batch":
            provider.online_write_batch(store.config, view, protos, None)
        elif name == "write_to_online_store":
            store.write_to_online_store(WINDOWS_VIEW, df)
        else:
            store.push(WINDOWS_PUSH_SOURCE, df, to=PushMode.ONLINE)
        out[f"write_{n // 1000}k_{name}_ms"] = (time.perf_counter() - began) * 1000
    return out


def chart(figures: dict[str, float], path: str) -> None:
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.bar(
        ["drain", "naive push"],
        [figures["drain_events_per_s"], figures["naive_push_events_per_s"]],
        color=["tab:blue", "tab:gray"],
    )
    a.set_ylabel("events/s")
    a.set_title("throughput")
    names = ["freshness_p50_ms", "freshness_p99_ms", "score_latency_p50_ms", "score_latency_p99_ms"]
    b.bar([n.replace("_ms", "") for n in names], [figures[n] for n in names])
    b.axhline(500, color="red", linestyle="--", label="target p99")
    b.set_ylabel("ms")
    b.set_title(f"latency at {figures['rate_achieved']:.0f} ev/s")
    b.tick_params(axis="x", rotation=20)
    b.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="drained events")
    parser.add_argument("--workers", type=int, default=1, help="bytewax -w for the drain")
    parser.add_argument(
        "--processes", type=int, default=2, help="drain as a cluster of N processes (-i/-a)"
    )
    parser.add_argument("--partitions", type=int, default=4, help="of the drained topic")
    parser.add_argument("--poll-ms", type=float, default=10, help="freshness: SDK poll interval")
    parser.add_argument("--rate", type=float, default=5_000, help="freshness: events/s")
    parser.add_argument("--seconds", type=float, default=20, help="freshness: duration")
    parser.add_argument("--every", type=int, default=25, help="freshness: sample 1 in N")
    parser.add_argument("--naive-events", type=int, default=3_000)
    parser.add_argument("--redis-db", type=int, default=11)
    args = parser.parse_args()

    base = Settings()
    redis = with_db(base.redis_connection_string, args.redis_db)
    settings = base.model_copy(update={"redis_connection_string": redis})
    load_profiles(settings)
    figures: dict[str, float] = {}
    figures |= bench_writes(settings)
    figures |= bench_drain(settings, args.events, args.workers, args.processes, args.partitions)
    figures |= bench_freshness(settings, args.rate, args.seconds, args.every, args.poll_ms)
    figures |= bench_naive(settings, args.naive_events)
    figures["ratio_drain_vs_naive"] = (
        figures["drain_events_per_s"] / figures["naive_push_events_per_s"]
    )

    print(
        f"\nstreaming benchmark ({args.events} drained events, {args.partitions} partitions, "
        f"processes={args.processes}, workers={args.workers}, {os.cpu_count()} cores)"
    )
    print(f"{'figure':<40}{'value':>14}")
    for name, value in figures.items():
        print(f"{name:<40}{value:>14,.1f}")
    print(
        f"\ntargets: drain >= 50,000 ev/s: {figures['drain_events_per_s']:,.0f}; "
        f"freshness p99 <= 500 ms: {figures['freshness_p99_ms']:,.0f}; "
        f">= 20x naive: {figures['ratio_drain_vs_naive']:.1f}x"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "stream.json").write_text(json.dumps(figures, indent=2) + "\n")
    chart(figures, str(RESULTS / "stream.png"))
    print(f"wrote {RESULTS / 'stream.json'} and {RESULTS / 'stream.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
