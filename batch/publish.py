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

from batch import output
from batch.entities import day_bounds
from batch.pit import literal
from core import storage
from core.contract import BATCH_SCORE_VIEW
from core.duck import connect

PUSH_BATCH = 20_000  # rows per online write: bounds memory, keeps Redis pipelines short


def publish_scores(store: FeatureStore, root: str, day: date) -> int:
    """Write the day's latest score per user offline and online; returns the user count.

    The day's files come from its committed manifest (``batch.output.resolve``), so a
    root on an object store publishes exactly the committed run."""
    view = store.get_feature_view(BATCH_SCORE_VIEW)
    push = view.stream_source
    offline = view.batch_source
    assert isinstance(push, PushSource) and isinstance(offline, FileSource)
    resolved = output.resolve(root, day)
    if resolved is None or not resolved.files:
        return 0
    con = connect()
    storage.attach(con, root, offline.path)
    files = "[" + ", ".join(literal(f) for f in resolved.files) + "]"
    con.execute(
        "CREATE TABLE latest AS SELECT CAST(user_id AS BIGINT) AS user_id, event_timestamp,"
        " CAST(score AS DOUBLE) AS score, model_version, transaction_id AS scored_transaction_id"
        f" FROM read_parquet({files}) QUALIFY row_number() OVER"
        " (PARTITION BY user_id ORDER BY event_timestamp DESC, transaction_id DESC) = 1"
    )
    _replace_day_offline(con, offline.path, day)
    rows = 0
    reader = con.sql("SELECT * FROM latest ORDER BY user_id").to_arrow_reader(PUSH_BATCH)
    for batch in reader:
        frame = batch.to_pandas()
        store.push(push.name, frame, to=PushMode.ONLINE)
        rows += len(frame)
    return rows


def _replace_day_offline(con: duckdb.DuckDBPyConnection, path: str, day: date) -> None:
    """Swap the day's rows in the view's batch source for ``latest``, atomically: a local
    file by rename, an object by one upload (S3 shows a multipart upload only once whole)."""
    start, end = day_bounds(day)
    keep = "SELECT * FROM latest"
    if storage.exists(path):
        keep = (
            f"SELECT * FROM read_parquet({literal(path)}) WHERE NOT"
            f" (event_timestamp >= {literal(start)} AND event_timestamp < {literal(end)})"
            f" UNION ALL BY NAME {keep}"
        )
    local = not storage.is_s3(path)
    target = str(Path(path).with_name(f".{Path(path).name}.tmp")) if local else path
    con.execute(f"COPY ({keep} ORDER BY event_timestamp) TO {literal(target)} (FORMAT parquet)")
    if local:
        Path(target).replace(path)
