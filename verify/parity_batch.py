"""Batch mode for parity: the real ``python -m batch score`` job over the sample, per day.

The job writes scores, decisions and reasons but not vectors, so the feature vectors come
from the same library call the job makes for each chunk (``batch.retrieve.duckdb_features``);
parity then also checks that the predictor gives the job's own scores on those vectors.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from feast import FeatureService, FeatureStore

from batch.entities import COLUMNS, VIEW, define_entities
from batch.plan import build_plan
from batch.retrieve import duckdb_features
from core.duck import connect
from verify.parity_workspace import ParityWorkspace


def batch_mode(
    ws: ParityWorkspace,
    store: FeatureStore,
    service: FeatureService,
    features: list[str],
    root: Path,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(vectors, the job's rows), both indexed by transaction_id."""
    entities = root / "batch-entities.parquet"
    ws.sample[list(COLUMNS)].to_parquet(entities, index=False)
    out = root / "batch-scores"
    days = sorted({ts.date() for ts in ws.sample.event_timestamp})
    args = ("--entities", str(entities), "--output", str(out))
    for day in days:
        done = ws.python("-m", "batch", "score", "--date", day.isoformat(), *args)
        if done.returncode != 0:
            raise RuntimeError(f"batch score --date {day} failed: {done.stderr[-2000:]}")
    scores = pd.concat(pd.read_parquet(p) for p in sorted(out.glob("date=*/part-*.parquet")))
    plan = build_plan(store, service)
    con = connect()
    frames = []
    for day in days:
        sel = define_entities(con, entities, day, None)
        if sel.rows:
            assert sel.first is not None and sel.last is not None
            # As the job does: a cursor of its own over the same database (and entities view).
            table = duckdb_features(con.cursor(), plan, VIEW, sel.first, sel.last)
            frames.append(table.select(["transaction_id", *features]).to_pandas())
    vectors = pd.concat(frames).set_index("transaction_id")
    return vectors, scores.set_index("transaction_id")
