"""Write the synthetic transactions and the daily profile tables as parquet."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.duck import connect
from core.events import LABELED_TRANSACTION_SCHEMA
from datagen.population import Population, make_population
from datagen.transactions import time_slice

PUBLISHED_SCORE_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ("score", pa.float64()),
        ("model_version", pa.string()),
        ("scored_transaction_id", pa.string()),
    ]
)
_S = 1_000_000
_DAY = 86_400 * _S
SLICE_ROWS = 500_000  # rows held in memory at once, whatever the total


@dataclass(frozen=True)
class GeneratorConfig:
    seed: int = 7
    users: int = 5_000
    merchants: int = 500
    days: int = 28
    txns_per_day: int = 10_000
    fraud_share: float = 0.02
    start: datetime | None = None  # default: `days` days before today, so data ends at 00:00 UTC

    def first_day(self) -> datetime:
        """Day one at 00:00 UTC: as given, else relative to today so online data is fresh."""
        if self.start is not None:
            return self.start
        today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        return today - timedelta(days=self.days)


@dataclass(frozen=True)
class DataFiles:
    transactions: Path
    user_profile: Path
    merchant_profile: Path
    published_scores: Path

    @classmethod
    def in_dir(cls, data_dir: Path) -> DataFiles:
        return cls(
            data_dir / "transactions.parquet",
            data_dir / "user_profile.parquet",
            data_dir / "merchant_profile.parquet",
            data_dir / "published_scores.parquet",
        )


def generate(cfg: GeneratorConfig, data_dir: Path) -> DataFiles:
    """Generate everything; the same config always gives byte-identical data."""
    data_dir.mkdir(parents=True, exist_ok=True)
    files = DataFiles.in_dir(data_dir)
    first_day = cfg.first_day()
    pop = make_population(
        np.random.default_rng([cfg.seed, 0]), cfg.users, cfg.merchants, first_day, cfg.days
    )
    start_us = int(first_day.timestamp() * _S)
    tmp = files.transactions.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, LABELED_TRANSACTION_SCHEMA) as writer:
        for day in range(cfg.days):
            slices = max(1, math.ceil(cfg.txns_per_day / SLICE_ROWS))
            for s in range(slices):
                rng = np.random.default_rng([cfg.seed, 1, day, s])
                lo = start_us + day * _DAY + s * _DAY // slices
                hi = start_us + day * _DAY + (s + 1) * _DAY // slices
                df = time_slice(rng, pop, lo, hi, cfg.txns_per_day // slices, cfg.fraud_share)
                ids = [f"tx-{day:04d}-{s:03d}-{i:08d}" for i in range(len(df))]
                table = pa.table(
                    {
                        "transaction_id": ids,
                        "user_id": df["user_id"],
                        "merchant_id": df["merchant_id"],
                        "amount": df["amount"],
                        "channel": df["channel"],
                        "country": df["country"],
                        "event_timestamp": pa.array(df["ts_us"], pa.int64()).cast(
                            pa.timestamp("us", tz="UTC")
                        ),
                        "is_fraud": df["is_fraud"],
                    },
                    schema=LABELED_TRANSACTION_SCHEMA,
                )
                writer.write_table(table)
    tmp.replace(files.transactions)
    _write_profiles(cfg, pop, files)
    if not files.published_scores.exists():
        # A fresh system has published no nightly scores yet; the table must still exist
        # for `feast materialize` to read the batch-score view's source.
        pq.write_table(PUBLISHED_SCORE_SCHEMA.empty_table(), files.published_scores)
    return files


def _write_profiles(cfg: GeneratorConfig, pop: Population, files: DataFiles) -> None:
    """Daily snapshots at 00:00 UTC, computed only from what happened before that midnight."""
    con = connect()
    con.register("users", pop.users[["user_id", "signup_us", "home_country"]])
    con.register("merchants", pop.merchants)
    start = f"TIMESTAMPTZ '{cfg.first_day():%Y-%m-%d} 00:00:00+00'"
    con.execute(
        f"""
        CREATE TEMP TABLE days AS
        SELECT CAST(d AS TIMESTAMPTZ) AS day
        FROM range({start}, {start} + INTERVAL {cfg.days + 1} DAY, INTERVAL 1 DAY) t(d)
        """
    )
    # One row per user per day since signup, so a 30-row frame is a 30-day window.
    con.execute(
        f"""
        COPY (
          WITH daily AS (
            SELECT user_id, date_trunc('day', event_timestamp) AS day,
                   COUNT(*) AS n, SUM(amount) AS s
            FROM read_parquet('{files.transactions}') GROUP BY ALL
          ), grid AS (
            SELECT u.user_id, d.day, u.signup_us, u.home_country,
                   COALESCE(x.n, 0) AS n, COALESCE(x.s, 0) AS s
            FROM users u JOIN days d ON u.signup_us < epoch_us(d.day) + 86400e6
            LEFT JOIN daily x ON x.user_id = u.user_id AND x.day = d.day
          ), rolled AS (
            SELECT *, SUM(n) OVER w AS n30, SUM(s) OVER w AS s30 FROM grid
            WINDOW w AS (PARTITION BY user_id ORDER BY day
                         ROWS BETWEEN 30 PRECEDING AND 1 PRECEDING)
          )
          SELECT user_id, day AS event_timestamp, day AS created_timestamp,
                 CAST(floor((epoch_us(day) - signup_us) / 86400e6) AS BIGINT)
                   AS account_age_days,
                 CASE WHEN n30 > 0 THEN s30 / n30 END AS avg_amount_30d,
                 CAST(COALESCE(n30, 0) AS BIGINT) AS txn_count_30d,
                 home_country
          FROM rolled
          ORDER BY event_timestamp, user_id
        ) TO '{files.user_profile}' (FORMAT parquet)
        """
    )
    con.execute(
        f"""
        COPY (
          SELECT m.merchant_id, d.day AS event_timestamp, d.day AS created_timestamp,
                 m.risk_score, m.is_high_risk_mcc
          FROM merchants m CROSS JOIN days d
          ORDER BY event_timestamp, merchant_id
        ) TO '{files.merchant_profile}' (FORMAT parquet)
        """
    )
