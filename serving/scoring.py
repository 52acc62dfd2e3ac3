"""From an online read to scores: staleness, missing features, the shared predictor."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.predictor import Models, Scored, Shadowed
from serving.feature_log import FeatureLog
from serving.online import OnlineFeatureReader, OnlineRead, RequestRow

Result = dict[str, Any]  # one record's answer, shaped as schemas.PredictResult


@dataclass(frozen=True)
class Scoring:
    """One request's answers, plus the columns its metrics are taken from."""

    results: list[Result]
    scored: Shadowed
    read: OnlineRead
    now: float


async def score_rows(
    reader: OnlineFeatureReader,
    models: Models,
    rows: Sequence[RequestRow],
    timeout_s: float,
    explain: bool,
    feature_log: FeatureLog | None = None,
) -> Scoring:
    """Read, default what is missing or stale, predict; one result per row, in order.

    Results are plain dicts, serialized as they are: a pydantic model per record and reason
    cost more than the scoring (docs/performance.md). The challenger,
    when set, scores the same vectors; its result is returned only with ``explain``.
    """
    now = time.time()
    read = await reader.read(rows, timeout_s, now=now)
    scored = models.score(read.columns)
    if feature_log is not None:  # an append; written in the background (serving.feature_log)
        feature_log.record(rows, read, now)
    champion, challenger = scored.champion, scored.challenger
    names = models.champion.features
    decisions = champion.decisions.tolist()
    reasons = champion.all_reasons()
    ages = {
        view: [None if t is None else round(now - t, 3) for t in ts]
        for view, ts in read.timestamps.items()
    }
    shadows = _shadows(challenger) if explain and challenger else None
    gaps = [n for n in names if None in read.columns[n]]  # most requests: none, a C-level scan
    results = []
    for i, (row, score) in enumerate(zip(rows, champion.scores.tolist(), strict=True)):
        stale = read.stale[i]
        results.append(
            {
                "transaction_id": row.get("transaction_id"),
                "score": score,
                "decision": decisions[i],
                "reasons": reasons[i],
                "feature_age_seconds": {view: a[i] for view, a in ages.items()},
                "missing_features": [
                    n for n in gaps if read.columns[n][i] is None and n not in stale
                ],
                "stale_features": [n for n in names if n in stale] if stale else [],
                "features": _features(read.columns, names, i) if explain else None,
                "challenger": shadows[i] if shadows else None,
            }
        )
    return Scoring(results, scored, read, now)


def _shadows(scored: Scored) -> list[Result]:
    """The challenger's answer per row, shaped as schemas.ShadowResult."""
    rows = zip(scored.scores.tolist(), scored.decisions.tolist(), scored.all_reasons(), strict=True)
    return [
        {"model_version": scored.version, "score": score, "decision": decision, "reasons": reasons}
        for score, decision, reasons in rows
    ]


def shadow_log(shadow: Scored) -> dict[str, Any]:
    """The challenger's scores and decisions for the request's log line, in record order."""
    return {
        "model_version": shadow.version,
        "scores": [round(s, 6) for s in shadow.scores.tolist()],
        "decisions": shadow.decisions.tolist(),
    }


def _features(columns: dict[str, list[Any]], names: list[str], i: int) -> dict[str, float | None]:
    return {n: None if columns[n][i] is None else float(columns[n][i]) for n in names}
