"""The DuckDB fast path returns exactly what Feast's get_historical_features returns.

The data is built to hit every corner of Feast's point-in-time semantics: TTL
expiry (and its exact boundary), rows that arrive late and out of order, duplicate
timestamps broken by the created timestamp, nulls, and entities with no rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from feast import FeatureStore

from batch.plan import build_plan
from batch.retrieve import duckdb_features, feast_features
from core.duck import connect
from core.settings import Settings
from core.store import copy_feature_repo, feature_service, open_store
from datagen.generate import PUBLISHED_SCORE_SCHEMA
from tests.conftest import Stack, feast_cli

pytestmark = pytest.mark.integration

T0 = datetime(2025, 1, 10, tzinfo=timezone.utc)
H = timedelta(hours=1)
US = timedelta(microseconds=1)


def _profiles(rng: np.random.Generator, n: int, keys: int, key: str) -> pd.DataFrame:
    ts = [T0 + int(h) * H for h in rng.integers(0, 10 * 24, n)]
    # Created up to two days late; the row index keeps (key, ts, created) unique.
    created = [
        t + int(c) * H + i * US
        for i, (t, c) in enumerate(zip(ts, rng.integers(0, 48, n), strict=True))
    ]
    return pd.DataFrame(
        {key: rng.integers(1, keys, n), "event_timestamp": ts, "created_timestamp": created}
    )


def crafted(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    users = _profiles(rng, 600, 40, "user_id")  # user 40 never has a row
    n = len(users)
    users["account_age_days"] = rng.integers(0, 1000, n)
    users["avg_amount_30d"] = np.where(rng.random(n) < 0.1, np.nan, rng.gamma(2, 30, n))
    users["txn_count_30d"] = rng.integers(0, 90, n)
    users["home_country"] = rng.choice(np.array(["US", "GB", "DE"], dtype=object), n)
    users.loc[rng.random(n) < 0.1, "home_country"] = None
    # Hand-made corners for user 1: a corrected row (same timestamp, created later) wins.
    fixed = pd.DataFrame(
        {
            "user_id": [1, 1, 1],
            "event_timestamp": [T0 + 300 * H] * 3,
            "created_timestamp": [T0 + 300 * H, T0 + 305 * H, T0 + 301 * H],
            "account_age_days": [10, 11, 12],
            "avg_amount_30d": [1.0, 2.0, 3.0],
            "txn_count_30d": [1, 2, 3],
            "home_country": ["US", "GB", "DE"],
        }
    )
    users = pd.concat([users, fixed], ignore_index=True)

    merchants = _profiles(rng, 200, 15, "merchant_id")  # merchant 15 never has a row
    merchants["risk_score"] = rng.random(len(merchants))
    merchants["is_high_risk_mcc"] = rng.integers(0, 2, len(merchants))

    n = 1500
    windows = pd.DataFrame(
        {
            "user_id": rng.integers(1, 40, n),
            "event_timestamp": [
                T0 + int(m) * 10 * timedelta(minutes=1) for m in rng.integers(0, 1500, n)
            ],
        }
    ).drop_duplicates(["user_id", "event_timestamp"])  # no created column: keep ties out
    n = len(windows)
    for name in ("txn_count_10m", "txn_count_1h", "txn_count_24h", "distinct_merchants_1h"):
        windows[name] = rng.integers(1, 20, n)
    for name in ("txn_amount_sum_10m", "txn_amount_sum_1h", "txn_amount_sum_24h"):
        windows[name] = rng.gamma(2, 50, n)
    windows["secs_since_last_txn"] = np.where(rng.random(n) < 0.1, np.nan, rng.gamma(2, 600, n))

    # Entity rows on the hour hit TTL boundaries exactly; some fall before or after all data.
    n = 2000
    hours = rng.integers(-24, 12 * 24, n)
    jitter = np.where(rng.random(n) < 0.5, 0, rng.integers(0, 3600, n))
    entities = pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "user_id": rng.integers(1, 42, n),  # 40 and 41: no rows anywhere
            "merchant_id": rng.integers(1, 17, n),
            "amount": np.round(rng.gamma(2, 40, n) + 1, 2),
            "channel": rng.choice(["pos", "online", "atm"], n),
            "country": rng.choice(["US", "GB", "DE", "FR"], n),
            "event_timestamp": [
                T0 + int(h) * H + int(j) * timedelta(seconds=1)
                for h, j in zip(hours, jitter, strict=True)
            ],
        }
    )
    corners = pd.DataFrame(
        {
            "transaction_id": ["tie", "ttl-edge", "ttl-expired", "dup-a", "dup-b"],
            "user_id": [1, 1, 1, 2, 2],
            "merchant_id": [1, 1, 1, 2, 2],
            "amount": [10.0, 20.0, 30.0, 40.0, 50.0],
            "channel": ["pos", "online", "atm", "pos", "online"],
            "country": ["US", "US", "FR", "US", "GB"],
            "event_timestamp": [
                T0 + 300 * H,  # equal to the feature row's timestamp: included
                T0 + 300 * H + timedelta(days=2),  # exactly at the TTL: still included
                T0 + 300 * H + timedelta(days=2) + US,  # one microsecond past it
                T0 + 100 * H,
                T0 + 100 * H,  # a duplicate entity row (same keys and time)
            ],
        }
    )
    entities = pd.concat([entities, corners], ignore_index=True)
    # Late rows: every file is written out of time order.
    shuffle = lambda df: df.sample(frac=1, random_state=1).reset_index(drop=True)  # noqa: E731
    return {
        "user_profile": shuffle(users),
        "merchant_profile": shuffle(merchants),
        "user_txn_windows": shuffle(windows),
        "entities": entities,
    }


@pytest.fixture(scope="module")
def mini(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeatureStore]:
    """A copy of the real feature repo over the crafted data, applied with the feast CLI."""
    root = tmp_path_factory.mktemp("pit-corners")
    copy_feature_repo(root)
    data = root / "data"
    data.mkdir()
    frames = crafted(np.random.default_rng(4))
    for name in ("user_profile", "merchant_profile", "user_txn_windows"):
        frames[name].to_parquet(data / f"{name}.parquet", index=False)
    pa.Table.from_pylist([], schema=PUBLISHED_SCORE_SCHEMA).to_pandas().to_parquet(
        data / "published_scores.parquet", index=False
    )
    frames["entities"].to_parquet(data / "entities.parquet", index=False)
    applied = stack.run(feast_cli(), "apply", cwd=root / "feature_repo")
    assert applied.returncode == 0, applied.stderr
    settings = Settings(
        feature_repo=root / "feature_repo",
        redis_connection_string=stack.settings.redis_connection_string,
    )
    yield open_store(settings)


def test_fast_path_equals_get_historical_features(mini: FeatureStore) -> None:
    service = feature_service(mini)
    plan = build_plan(mini, service)
    entities = pd.read_parquet(Path(mini.repo_path).parent / "data" / "entities.parquet")

    expected = feast_features(mini, service, entities).to_pandas()
    con = connect()
    con.register("e", entities)
    lo, hi = entities["event_timestamp"].min(), entities["event_timestamp"].max()
    got = duckdb_features(con, plan, "e", lo.to_pydatetime(), hi.to_pydatetime()).to_pandas()

    assert sorted(got.columns) == sorted(expected.columns)
    key = ["transaction_id"]
    expected = expected.sort_values(key).reset_index(drop=True)
    got = got[expected.columns].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)

    # The corners were really hit, with the values Feast's semantics give.
    row = got.set_index("transaction_id")
    assert row.loc["tie", "account_age_days"] == 11  # the latest-created duplicate wins
    assert row.loc["ttl-edge", "account_age_days"] == 11
    assert pd.isna(row.loc["ttl-expired", "account_age_days"])
    assert row.loc["dup-a", "risk_score"] == row.loc["dup-b", "risk_score"]
    unknown = got[got["user_id"] >= 40]
    assert len(unknown) and unknown["account_age_days"].isna().all()
    assert unknown["txn_count_24h"].isna().all()
    assert got["home_country"].isna().sum() > got["account_age_days"].isna().sum()
