"""Publish each user's latest score of a day: offline beside the view, online through Feast.

The batch-score view's own sources (from the registry) say where: its FileSource
gets the day's rows replaced (so re-publishing never duplicates them) and its
PushSource takes the same rows into the online store with ``store.push``.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
from feast import FeatureStore, FileSource, PushSource
from feast.data_source import PushMode

from batch.entities import day_bounds
from batch.pit import literal
from core.contract import BATCH_SCORE_VIEW
from core.duck import connect

PUSH_BATCH = 20_000  # rows per online write: bounds memory, keeps Redis pipelines short


def publish_scores(store: FeatureStore, partition: Path, day: date) -> int:
    """Write the day's latest score per user offline and online; returns the user count."""
    view = store.get_feature_view(BATCH_SCORE_VIEW)
    push = view.stream_source
    offline = view.batch_source
    assert isinstance(push, PushSource) and isinstance(offline, FileSource)
    con = connect()
    parts = sorted(partition.glob("part-*.parquet"))
    if not parts:
        return 0
    files = "[" + ", ".join(literal(str(p)) for p in parts) + "]"
    con.execute(
        "CREATE TABLE latest AS SELECT CAST(user_id AS BIGINT) AS user_id, event_timestamp,"
        " CAST(score AS DOUBLE) AS score, model_version, transaction_id AS scored_transaction_id"
        f" FROM read_parquet({files}) QUALIFY row_number() OVER"
        " (PARTITION BY user_id ORDER BY event_timestamp DESC, transaction_id DESC) = 1"
    )
    _replace_day_offline(con, Path(offline.path), day)
    rows = 0
    reader = con.sql("SELECT * FROM latest ORDER BY user_id").to_arrow_reader(PUSH_BATCH)
    for batch in reader:
        frame = batch.to_pandas()
        store.push(push.name, frame, to=PushMode.ONLINE)
        rows += len(frame)
    return rows


def _replace_day_offline(con: duckdb.DuckDBPyConnection, path: Path, day: date) -> None:
    """Swap the day's rows in the view's batch source for ``latest``, atomically."""
    start, end = day_bounds(day)
    keep = "SELECT * FROM latest"
    if path.exists():
        keep = (
            f"SELECT * FROM read_parquet({literal(str(path))}) WHERE NOT"
            f" (event_timestamp >= {literal(start)} AND event_timestamp < {literal(end)})"
            f" UNION ALL BY NAME {keep}"
        )
    tmp = path.with_name(f".{path.name}.tmp")
    con.execute(f"COPY ({keep} ORDER BY event_timestamp) TO {literal(str(tmp))} (FORMAT parquet)")
    tmp.replace(path)
