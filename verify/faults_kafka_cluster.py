"""One Kafka broker SIGKILLed mid-stream on a three-broker cluster (replication 3,
``min.insync.replicas`` 2), then started again.

    python -m verify.faults_kafka_cluster [--budget EVENTS] [--seconds S] [--seed N] [--redis-db N]

The cluster is KAFKA_BOOTSTRAP_SERVERS if it lists several brokers, else one devservices
starts on 9192-9194 (and stops afterwards). A paced stream of private events runs through
the real dataflow process; the broker leading partitions of both the input and the scores
topics is SIGKILLed once a seeded 20-35% of the events are scored, and the stream goes on
on two brokers. Then the broker is started again over its data, rejoins every partition's
in-sync replicas and is handed its leaderships back, and the rest of the stream follows.
Checked: every event produced and scored, none lost or counted twice in the windows (the
online store equals the backfill), the flow process never restarted, the longest time
without a score, and that our producers really wait for all in-sync replicas (``acks=all``):
a write to a topic needing three in-sync replicas, by the stream's score sink and by
``fraud-produce``, is held back while two brokers are up and delivered once three are,
and that they write idempotently (every record batch of the scores and probe topics carries
a producer id, read back from a broker's log with Kafka's ``DumpLogSegments``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from confluent_kafka import Message

from core.kafka import ensure_topics
from core.settings import PROJECT_ROOT, Settings
from devservices.kafka_cluster import kill_node, start_node
from harness.flow import flow_env, interrupt, launch_flow
from harness.kafka import PacedProducer, ScoreWatcher, Topics, Worker, read_topic
from harness.kafka_cluster import (
    batch_producer_ids,
    elect_preferred,
    in_sync_everywhere,
    kafka_cluster,
    leaders,
    longest_gap_s,
    replication,
)
from harness.models import champion_dir_or_exit
from harness.report import RESULTS_DIR, Check, table, write_json
from harness.stream import outcome_checks, private_events
from harness.workspace import own_db
from streaming.sinks import ScoreSink
from verify.faults_stream import WAIT_S, load_merchants

PARTITIONS = 3  # three replicas on three brokers: each broker leads one partition of each topic
DOWN_UNTIL = 0.6  # share of the events sent before the broker is started again
CASE = "kafka cluster: 1 of 3 brokers SIGKILLed + restarted"


@dataclass
class AcksProbe:
    """Writes to a topic that needs all three replicas in sync, started while one broker is
    down: with ``acks=all`` they wait for it; with ``acks=1`` they would land at once."""

    topic: str
    sink: Worker
    cli: subprocess.Popen[bytes]

    @classmethod
    def start(cls, settings: Settings, bootstrap: str, topic: str) -> AcksProbe:
        part = ScoreSink({"bootstrap.servers": bootstrap}, topic).build("probe", 0, 1)
        sink = Worker(lambda: part.write_batch([[("probe-sink", "{}")]]))
        sink.start()
        env = os.environ | {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        }
        tx = str(settings.data_dir / "transactions.parquet")
        cmd = [sys.executable, "-m", "streaming.produce", "--file", tx, "--limit", "2"]
        cli = subprocess.Popen(
            [*cmd, "--topic", topic],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return cls(topic, sink, cli)

    def pending(self) -> bool:
        return self.sink.is_alive() and self.cli.poll() is None

    def finish(self, bootstrap: str) -> int:
        """Messages in the probe topic once both writers are done (3 expected)."""
        self.sink.join(WAIT_S)
        self.cli.wait(WAIT_S)
        return len(read_topic(bootstrap, self.topic, at_least=3))


def _stream_up(
    producer: PacedProducer, watcher: ScoreWatcher, flow: subprocess.Popen[bytes]
) -> bool:
    producer.start()
    watcher.start()
    producer.allow(1)  # its score says the flow is up; pace the stream from then
    return watcher.wait_for(1, flow, WAIT_S)


def _victim(bootstrap: str, topics: Topics) -> tuple[int, bool]:
    """The broker leading input partition 0, and whether it leads a scores partition too."""
    broker = leaders(bootstrap, topics.transactions)[0]
    return broker, broker in leaders(bootstrap, topics.scores).values()


def _rejoin(settings: Settings, broker: int, names: list[str]) -> tuple[float, bool, bool]:
    """Start ``broker`` again; (seconds until in sync everywhere, in sync, leads again)."""
    bootstrap = settings.kafka_bootstrap_servers
    began = time.monotonic()
    start_node(settings, broker)
    deadline = began + WAIT_S
    while not (synced := in_sync_everywhere(bootstrap, names, broker)):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    took = time.monotonic() - began
    if synced:
        elect_preferred(bootstrap, names)
    leads = any(leader == broker for t in names[:2] for leader in leaders(bootstrap, t).values())
    return took, synced, leads


@dataclass
class Measured:
    """What one run saw, phase by phase, for ``_checks``."""

    n: int
    seed: int
    broker: int = 0
    leads_scores: bool = False
    landed: bool = False
    scored_at_kill: int = 0
    kill_ms: float = 0.0
    carried: bool = False
    scored_while_down: int = 0
    down_end_ms: float = 0.0
    held: bool = False
    rejoin: tuple[float, bool, bool] = (0.0, False, False)
    back_ms: float = 0.0
    finished: bool = False
    probed: int = 0
    cli_code: int | None = None
    producer_ids: list[int] = field(default_factory=list)


def _outage(
    settings: Settings,
    m: Measured,
    topics: Topics,
    run: tuple[PacedProducer, ScoreWatcher],
    flow: subprocess.Popen[bytes],
) -> None:
    """Kill the leader mid-stream, carry on to ``DOWN_UNTIL``, restart it, finish."""
    bootstrap = settings.kafka_bootstrap_servers
    producer, watcher = run
    up = _stream_up(producer, watcher, flow)
    producer.allow(int(DOWN_UNTIL * m.n))
    kill_at = int(np.random.default_rng(m.seed).uniform(0.2, 0.35) * m.n)
    m.landed = watcher.wait_for(kill_at, flow, WAIT_S) and up
    m.broker, m.leads_scores = _victim(bootstrap, topics)
    m.scored_at_kill = watcher.distinct
    m.kill_ms = time.time() * 1000
    kill_node(settings, m.broker)
    probe = AcksProbe.start(settings, bootstrap, f"{topics.transactions}-acks")
    m.carried = watcher.wait_for(int(DOWN_UNTIL * m.n), flow, WAIT_S)
    m.scored_while_down = watcher.distinct - m.scored_at_kill
    m.down_end_ms = time.time() * 1000
    m.held = probe.pending()
    names = [topics.transactions, topics.scores, topics.dlq, probe.topic]
    m.rejoin = _rejoin(settings, m.broker, names)
    m.back_ms = time.time() * 1000
    producer.allow(m.n)
    m.finished = watcher.wait_for(m.n, flow, WAIT_S)
    m.probed, m.cli_code = probe.finish(bootstrap), probe.cli.returncode


def _checks(
    m: Measured,
    layout: str,
    layout_ok: bool,
    flow: subprocess.Popen[bytes],
    messages: list[Message],
) -> list[Check]:
    survived = flow.poll() is None
    rejoin_s, synced, leads_again = m.rejoin
    return [
        Check(CASE, "topics: partitions, replicas, min.insync.replicas", layout, layout_ok),
        Check(CASE, "broker killed (leads input and scores partitions)",
              f"broker {m.broker} at {m.scored_at_kill} of {m.n} scored (seed {m.seed})",
              m.landed and m.leads_scores),
        Check(CASE, "events scored while it was down", str(m.scored_while_down), m.carried),
        Check(CASE, "score gap before the kill (the stream's own pace)",
              f"{longest_gap_s(messages, before_ms=m.kill_ms):.1f} s", True),
        Check(CASE, "score gap: longest time without a score, kill included",
              f"{longest_gap_s(messages, before_ms=m.down_end_ms):.1f} s", True),
        Check(CASE, "acks=all: writes needing 3 in-sync replicas held while 2 are",
              "held" if m.held else "NOT held (delivered with a broker down)", m.held),
        Check(CASE, "... and delivered once it is back (score sink + fraud-produce)",
              f"{m.probed} of 3 messages, fraud-produce exit {m.cli_code}",
              m.probed == 3 and m.cli_code == 0),
        Check(CASE, "idempotent writes: record batches with a producer id (scores, probe)",
              f"{sum(i >= 0 for i in m.producer_ids)} of {len(m.producer_ids)}",
              bool(m.producer_ids) and min(m.producer_ids) >= 0),
        Check(CASE, "killed broker back in sync on every partition, leading again",
              f"{rejoin_s:.1f} s after its start" if synced else "NO", synced and leads_again),
        Check(CASE, "flow process survived (no restart) and scored to the end",
              f"yes, pid {flow.pid}" if survived else f"NO, exit {flow.returncode}",
              survived and m.finished),
        Check(CASE, "score gap after the broker rejoined",
              f"{longest_gap_s(messages, after_ms=m.back_ms):.1f} s", True),
    ]  # fmt: skip


def broker_failover(
    settings: Settings, workdir: Path, budget: int = 1000, seconds: float = 8.0, seed: int = 6
) -> list[Check]:
    """The case, ``budget`` events over ``seconds`` of sending. ``settings`` name a running
    cluster (``harness.kafka_cluster.kafka_cluster``) and a feature repo with a trained model
    whose online store holds the merchant profiles (``load_merchants``)."""
    bootstrap = settings.kafka_bootstrap_servers
    events = private_events(settings, budget, seed)
    topics = Topics.fresh("kcluster")
    names = [topics.transactions, topics.scores, topics.dlq]
    parts = ensure_topics({"bootstrap.servers": bootstrap}, names, PARTITIONS).partitions
    ensure_topics({"bootstrap.servers": bootstrap}, [f"{topics.transactions}-acks"], 1, 3, 3)
    replicas, min_insync = replication(bootstrap, topics.scores)
    layout = f"{parts}, {replicas}, {min_insync}"
    m = Measured(len(events), seed)
    producer = PacedProducer(bootstrap, topics.transactions, events, seconds)
    watcher = ScoreWatcher(bootstrap, topics.scores)
    env = flow_env(settings, bootstrap, topics) | {"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}
    flow = launch_flow(env, workdir / "recovery", workdir / "flow.log", tail=True)
    try:
        _outage(settings, m, topics, (producer, watcher), flow)
        producer.join(WAIT_S)
        messages = read_topic(bootstrap, topics.scores)
        for topic in (topics.scores, f"{topics.transactions}-acks"):
            m.producer_ids += batch_producer_ids(settings, topic)
        checks = _checks(m, layout, (replicas, min_insync) == (3, "2"), flow, messages)
        return checks + outcome_checks(CASE, settings, bootstrap, topics, events, producer)
    finally:
        producer.allow(m.n)
        watcher.stop()
        interrupt(flow)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m verify.faults_kafka_cluster", description=__doc__
    )
    parser.add_argument("--budget", type=int, default=10_000, help="events in the stream")
    parser.add_argument("--seconds", type=float, default=30.0, help="production time")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--redis-db", type=int, default=12, help="the command's own database")
    args = parser.parse_args(argv)
    base = Settings()
    settings = base.model_copy(update={"redis_connection_string": own_db(base, args.redis_db)})
    champion_dir_or_exit(settings)
    load_merchants(settings)
    workdir = RESULTS_DIR / "faults_kafka_cluster-work"
    shutil.rmtree(workdir, ignore_errors=True)
    with kafka_cluster(settings) as on_cluster:
        checks = broker_failover(on_cluster, workdir, args.budget, args.seconds, args.seed)
    print(table(checks))
    conditions = vars(args) | {"cores": os.cpu_count(), "brokers": 3}
    print(f"wrote {write_json('faults_kafka_cluster', checks, {'conditions': conditions})}")
    if all(c.ok for c in checks):
        shutil.rmtree(workdir, ignore_errors=True)
        return 0
    print(f"flow log kept in {workdir}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
