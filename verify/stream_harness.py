"""What the streaming fault cases share: private events, a paced producer, a score watcher,
the flow as a real process, and the checks of what came out.

The flow is a black box here: it runs as ``fraud-stream`` (``python -m streaming``) with
its own topics and this run's private users, and is judged only by what it leaves in
Kafka (scores, dead letters) and in the online store (window aggregates).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from confluent_kafka import Consumer, KafkaError, Message, Producer

from core.aggregations import FEATURE_NAMES, backfill_sql
from core.contract import WINDOWS_VIEW
from core.settings import PROJECT_ROOT, Settings
from core.store import open_store
from streaming.produce import encode, ensure_topic
from verify.report import Check
from verify.topics import Topics

FLOW = "streaming.dataflow:get_flow"
PARTITIONS = 2
SPAN = timedelta(hours=23)  # under the 24 h window: each user's txn_count_24h counts all its events
QUIET = {"log_level": 2}  # our clients: no librdkafka FAIL lines while the broker is down


def fresh_topics(bootstrap: str) -> Topics:
    """Fresh topics, created up front with ``PARTITIONS`` partitions each."""
    topics = Topics.fresh("faults")
    for topic in (topics.transactions, topics.scores, topics.dlq):
        ensure_topic(bootstrap, topic, PARTITIONS)
    return topics


def private_events(settings: Settings, budget: int, seed: int) -> pd.DataFrame:
    """``budget`` events of users no other run touches: the data's last 23 hours, whole users
    drawn with ``seed``, remapped to fresh ids (copied again under other ids if the day is
    short), shifted to end now; their user profiles are written to the online store."""
    tx = pd.read_parquet(settings.data_dir / "transactions.parquet").drop(columns=["is_fraud"])
    day = tx[tx.event_timestamp > tx.event_timestamp.max() - SPAN]
    users = day.groupby("user_id").size().sample(frac=1.0, random_state=seed)
    profiles = pd.read_parquet(settings.data_dir / "user_profile.parquet")
    latest = profiles.sort_values("event_timestamp").groupby("user_id").tail(1)
    now = datetime.now(timezone.utc)
    copies, rows = [], []
    for copy in range(-(-budget // len(day))):
        want = min(budget - copy * len(day), len(day))
        keep = users.index[: int((users.cumsum() < want).sum()) + 1]
        offset = 10**12 + uuid.uuid4().int % 10**9 * 1000
        events = day[day.user_id.isin(keep)].copy()
        events["event_timestamp"] += now - day.event_timestamp.max()
        events["transaction_id"] += f"-{offset}"
        events["user_id"] += offset
        copies.append(events)
        mine = latest[latest.user_id.isin(keep)].copy()
        mine["user_id"] += offset
        rows.append(mine.assign(event_timestamp=now - timedelta(minutes=5)))
    open_store(settings).write_to_online_store("user_profile", pd.concat(rows))
    events = pd.concat(copies).sort_values("event_timestamp", kind="stable")
    return events.reset_index(drop=True)


def expected_latest(events: pd.DataFrame) -> pd.DataFrame:
    """The offline backfill's aggregates at each user's newest event: what Redis must hold."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("events", events)
    every = con.execute(backfill_sql("events")).df()
    return every.sort_values("event_timestamp").groupby("user_id").tail(1).set_index("user_id")


def online_mismatches(settings: Settings, want: pd.DataFrame) -> tuple[int, int]:
    """(users whose online window row differs from ``want`` in any feature, sum of the
    online txn_count_24h): exact equality, as both sides sum integer cents."""
    got = (
        open_store(settings)
        .get_online_features(
            features=[f"{WINDOWS_VIEW}:{n}" for n in FEATURE_NAMES],
            entity_rows=[{"user_id": int(u)} for u in want.index],
        )
        .to_df()
        .set_index("user_id")
        .loc[want.index]
    )
    differs = np.zeros(len(want), dtype=bool)
    for name in FEATURE_NAMES:
        a = got[name].astype("float64").to_numpy()
        b = want[name].astype("float64").to_numpy()
        differs |= ~((a == b) | (np.isnan(a) & np.isnan(b)))
    return int(differs.sum()), int(np.nansum(got["txn_count_24h"].astype("float64")))


class PacedProducer(threading.Thread):
    """Produces the events in event-time order at an even pace (all of them in ``seconds``
    of sending), with an idempotent producer: retries across a broker outage add no
    duplicates. It sends only up to the index ``allow()`` last set, so a fault case can
    hold the stream back until the flow is up, or until the fault is over, and be sure the
    fault lands mid-stream; the pace restarts from each release."""

    def __init__(self, bootstrap: str, topic: str, events: pd.DataFrame, seconds: float) -> None:
        super().__init__(daemon=True)
        self.messages = [encode(row) for row in events.to_dict("records")]
        self.topic = topic
        self.interval = seconds / max(len(self.messages), 1)
        self.limit = 0
        self.changed = threading.Condition()
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
            | {"message.timeout.ms": 0}  # retry until the broker is back, however long
            | QUIET
        )
        self.sent = 0
        self.acked = 0
        self.failed: list[str] = []

    def allow(self, upto: int) -> None:
        """Let events ``[0, upto)`` out (a lower value than before holds the rest back)."""
        with self.changed:
            self.limit = min(upto, len(self.messages))
            self.changed.notify_all()

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.acked += 1
        else:
            self.failed.append(str(err))

    def run(self) -> None:
        began = time.monotonic()
        for i, (key, value) in enumerate(self.messages):
            if i >= self.limit:
                with self.changed:
                    while i >= self.limit:
                        self.changed.wait(0.05)
                        self.producer.poll(0)
                began = time.monotonic() - i * self.interval
            while (wait := began + i * self.interval - time.monotonic()) > 0:
                self.producer.poll(min(wait, 0.05))
            self.producer.produce(self.topic, value, key, on_delivery=self._delivered)
            self.producer.poll(0)
            self.sent += 1
        self.producer.flush(900)  # bounded here: the messages themselves never time out


class ScoreWatcher(threading.Thread):
    """Follows the scores topic as the flow writes it: the distinct transactions scored so far."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"faults-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
            | QUIET
        )
        self.consumer.subscribe([topic])
        self.seen: set[bytes] = set()
        self.stopping = threading.Event()

    @property
    def distinct(self) -> int:
        return len(self.seen)

    def run(self) -> None:
        while not self.stopping.is_set():
            for msg in self.consumer.consume(1000, 0.05):
                if msg.error() is None and msg.key() is not None:
                    self.seen.add(msg.key())  # type: ignore[arg-type]
        self.consumer.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)

    def wait_for(self, count: int, flow: subprocess.Popen[bytes], timeout_s: float) -> bool:
        """True once ``count`` distinct transactions are scored; False if the flow died or
        time ran out first."""
        deadline = time.monotonic() + timeout_s
        while self.distinct < count:
            if flow.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True


def read_topic(bootstrap: str, topic: str, timeout_s: float = 60) -> list[Message]:
    """Every message of ``topic``, each partition read to its end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"faults-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
        | QUIET
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.subscribe([topic])
    out: list[Message] = []
    done: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(done) < len(parts) and time.monotonic() < deadline:
        for msg in consumer.consume(1000, 0.5):
            err = msg.error()
            if err is None:
                out.append(msg)
            elif err.code() == KafkaError._PARTITION_EOF:
                done.add(int(msg.partition() or 0))
    consumer.close()
    if len(done) < len(parts):
        raise TimeoutError(f"could not read {topic} to its end within {timeout_s:.0f} s")
    return out


def flow_env(settings: Settings, bootstrap: str, topics: Topics) -> dict[str, str]:
    env = os.environ | topics.env()
    env |= {
        "FEATURE_REPO": str(settings.feature_repo),
        "REDIS_CONNECTION_STRING": settings.redis_connection_string,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_LOG_INTERVAL_S": "1",
    }
    if settings.model_dir is not None:
        env["MODEL_DIR"] = str(settings.model_dir)
    return env


def launch_flow(
    env: dict[str, str], recovery: Path, log: Path, tail: bool
) -> subprocess.Popen[bytes]:
    """``fraud-stream`` (``python -m streaming``) with recovery on in ``recovery``, a
    snapshot every second and no backup delay; output appended to ``log``."""
    args = ["-r", str(recovery), "-s", "1", "-b", "0"]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streaming", f"{FLOW}(tail={tail})", *args],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def interrupt(flow: subprocess.Popen[bytes], grace_s: float = 15) -> None:
    """Ctrl-C for a tailing flow we are done with; SIGKILL if it does not stop in time."""
    if flow.poll() is None:
        flow.send_signal(signal.SIGINT)
        try:
            flow.wait(grace_s)
        except subprocess.TimeoutExpired:
            flow.kill()
            flow.wait()


def wait_online(settings: Settings, want: pd.DataFrame, timeout_s: float) -> tuple[int, int]:
    """Poll the online store until it holds ``want`` (the last micro-batch may trail the
    last score by a moment); the final (mismatched users, summed 24 h count)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = online_mismatches(settings, want)
        if result[0] == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def outcome_checks(
    case: str,
    settings: Settings,
    bootstrap: str,
    topics: Topics,
    events: pd.DataFrame,
    producer: PacedProducer,
) -> list[Check]:
    """Produced vs scored vs aggregated, and the online store vs the backfill of the events."""
    n = len(events)
    scores: dict[str, set[float]] = defaultdict(set)
    messages = read_topic(bootstrap, topics.scores)
    for msg in messages:
        body = json.loads(msg.value() or b"{}")
        scores[body["transaction_id"]].add(body["score"])
    ids = set(events.transaction_id)
    missing = len(ids - scores.keys())
    unknown = len(scores.keys() - ids)
    differing = sum(len(s) > 1 for s in scores.values())
    dead = len(read_topic(bootstrap, topics.dlq))
    want = expected_latest(events)
    wrong_users, counted = wait_online(settings, want, timeout_s=30)
    return [
        Check(case, "events produced (acked by the broker)", f"{producer.acked} of {n}",
              producer.acked == n and not producer.failed),
        Check(case, "events scored at least once", f"{n - missing} of {n}",
              missing == 0 and unknown == 0),
        Check(case, "score messages (duplicates: replays)",
              f"{len(messages)} ({len(messages) - len(scores)} duplicates)", True),
        Check(case, "duplicates with a different score", str(differing), differing == 0),
        Check(case, "dead letters", str(dead), dead == 0),
        Check(case, "events aggregated (sum of online txn_count_24h)", f"{counted} of {n}",
              counted == n),
        Check(case, "users whose online aggregates differ from the backfill",
              f"{wrong_users} of {len(want)}", wrong_users == 0),
    ]  # fmt: skip
