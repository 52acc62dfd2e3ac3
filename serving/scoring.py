"""From an online read to scores: staleness, missing features, the shared predictor."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from core.predictor import Predictor
from serving.feature_log import FeatureLog
from serving.online import OnlineFeatureReader, RequestRow
from serving.schemas import PredictResult


async def score_rows(
    reader: OnlineFeatureReader,
    predictor: Predictor,
    rows: Sequence[RequestRow],
    timeout_s: float,
    explain: bool,
    feature_log: FeatureLog | None = None,
) -> list[PredictResult]:
    """Read, default what is missing or stale, predict; one result per row, in order."""
    now = time.time()
    read = await reader.read(rows, timeout_s, now=now)
    scores = predictor.predict(read.columns)
    if feature_log is not None:  # an append; written in the background (serving.feature_log)
        feature_log.record(rows, read, now)
    names = predictor.features
    results = []
    for i, row in enumerate(rows):
        stale = [n for n in names if n in read.stale[i]]
        results.append(
            PredictResult(
                transaction_id=row.get("transaction_id"),
                score=float(scores[i]),
                feature_age_seconds={
                    view: None if ts[i] is None else round(now - ts[i], 3)  # type: ignore[operator]
                    for view, ts in read.timestamps.items()
                },
                missing_features=[
                    n for n in names if read.columns[n][i] is None and n not in read.stale[i]
                ],
                stale_features=stale,
                features=_features(read.columns, names, i) if explain else None,
            )
        )
    return results


def _features(columns: dict[str, list[Any]], names: list[str], i: int) -> dict[str, float | None]:
    return {n: None if columns[n][i] is None else float(columns[n][i]) for n in names}
