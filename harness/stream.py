"""What the streaming cases share: private users and events, and the checks of what the
flow left in Kafka (scores, dead letters) and in the online store (window aggregates).

The flow is a black box here: it runs as a process with its own topics and this run's
private users, so no other run's online values change.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

from core.aggregations import FEATURE_NAMES, backfill_sql
from core.contract import WINDOWS_VIEW
from core.duck import connect
from core.settings import Settings
from core.store import open_store
from harness.kafka import PacedProducer, Topics, read_topic
from harness.report import Check

PARTITIONS = 2
SPAN = timedelta(hours=23)  # under the 24 h window: each user's txn_count_24h counts all its events


def fresh_topics(bootstrap: str) -> Topics:
    """Fresh topics, created up front with ``PARTITIONS`` partitions each."""
    return Topics.created("faults", bootstrap, PARTITIONS)


def privatize(settings: Settings, events: pd.DataFrame, shift: timedelta) -> pd.DataFrame:
    """``events`` under fresh user ids (their newest profiles written to the online store
    under the new ids) and transaction ids, shifted by ``shift``, in event-time order."""
    offset = 10**12 + uuid.uuid4().int % 10**9 * 1000
    profiles = pd.read_parquet(settings.data_dir / "user_profile.parquet")
    mine = profiles[profiles.user_id.isin(events.user_id.unique())]
    mine = mine.sort_values("event_timestamp").groupby("user_id").tail(1).copy()
    mine["user_id"] += offset
    mine["event_timestamp"] = datetime.now(timezone.utc) - timedelta(minutes=5)
    open_store(settings).write_to_online_store("user_profile", mine)
    events = events.drop(columns=["is_fraud"], errors="ignore").copy()
    events["event_timestamp"] += shift
    events["transaction_id"] += f"-{offset}"
    events["user_id"] += offset
    return events.sort_values("event_timestamp", kind="stable").reset_index(drop=True)


def private_events(settings: Settings, budget: int, seed: int) -> pd.DataFrame:
    """``budget`` events of users no other run touches: the data's last 23 hours, whole users
    drawn with ``seed``, copied again under other ids if the day is short, shifted to end now."""
    tx = pd.read_parquet(settings.data_dir / "transactions.parquet")
    day = tx[tx.event_timestamp > tx.event_timestamp.max() - SPAN]
    users = day.groupby("user_id").size().sample(frac=1.0, random_state=seed)
    shift = datetime.now(timezone.utc) - day.event_timestamp.max()
    copies = []
    for copy in range(-(-budget // len(day))):
        want = min(budget - copy * len(day), len(day))
        keep = users.index[: int((users.cumsum() < want).sum()) + 1]
        copies.append(privatize(settings, day[day.user_id.isin(keep)], shift))
    events = pd.concat(copies).sort_values("event_timestamp", kind="stable")
    return events.reset_index(drop=True)


def recent_events(settings: Settings, users: int, hours: float, end: datetime) -> pd.DataFrame:
    """The last ``hours`` of the first ``users`` users' transactions, shifted to end at
    ``end``, under fresh user ids whose profiles are copied to the online store."""
    tx = pd.read_parquet(settings.data_dir / "transactions.parquet")
    tx = tx[tx.user_id < users]
    tx = tx[tx.event_timestamp > tx.event_timestamp.max() - timedelta(hours=hours)]
    return privatize(settings, tx, end - tx.event_timestamp.max())


def expected_latest(events: pd.DataFrame) -> pd.DataFrame:
    """The offline backfill's aggregates at each user's newest event: what Redis must hold."""
    con = connect()
    con.register("events", events)
    every = con.execute(backfill_sql("events")).df()
    return every.sort_values("event_timestamp").groupby("user_id").tail(1).set_index("user_id")


def online_windows(settings: Settings, users: list[int]) -> pd.DataFrame:
    """The online store's window aggregates of ``users``, indexed by user id."""
    got = open_store(settings).get_online_features(
        features=[f"{WINDOWS_VIEW}:{n}" for n in FEATURE_NAMES],
        entity_rows=[{"user_id": u} for u in users],
    )
    return got.to_df().set_index("user_id")


def assert_online_equals_backfill(settings: Settings, events: pd.DataFrame) -> None:
    """The online store holds, for every user of ``events``, exactly the offline backfill's
    aggregates at its newest event: one series comparison per feature."""
    want = expected_latest(events)
    got = online_windows(settings, [int(u) for u in want.index])
    for name in FEATURE_NAMES:
        pd.testing.assert_series_equal(
            got[name].astype("float64"), want[name].astype("float64"), obj=name
        )


def online_mismatches(settings: Settings, want: pd.DataFrame) -> tuple[int, int]:
    """(users whose online window row differs from ``want`` in any feature, sum of the
    online txn_count_24h): exact equality, as both sides sum integer cents."""
    got = online_windows(settings, [int(u) for u in want.index]).loc[want.index]
    differs = np.zeros(len(want), dtype=bool)
    for name in FEATURE_NAMES:
        a = got[name].astype("float64").to_numpy()
        b = want[name].astype("float64").to_numpy()
        differs |= ~((a == b) | (np.isnan(a) & np.isnan(b)))
    return int(differs.sum()), int(np.nansum(got["txn_count_24h"].astype("float64")))


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
