"""From an online read to scores: staleness, missing features, the shared predictor."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from core.predictor import Models, Scored, Shadowed
from serving.feature_log import FeatureLog
from serving.online import OnlineFeatureReader, RequestRow
from serving.schemas import PredictResult, ReasonOut, ShadowResult


async def score_rows(
    reader: OnlineFeatureReader,
    models: Models,
    rows: Sequence[RequestRow],
    timeout_s: float,
    explain: bool,
    feature_log: FeatureLog | None = None,
) -> tuple[list[PredictResult], Shadowed]:
    """Read, default what is missing or stale, predict; one result per row, in order.

    The challenger, when set, scores the same vectors; its result is returned only with
    ``explain`` (the caller logs it and records its metrics either way).
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
    results = []
    for i, row in enumerate(rows):
        stale = [n for n in names if n in read.stale[i]]
        results.append(
            PredictResult(
                transaction_id=row.get("transaction_id"),
                score=float(champion.scores[i]),
                decision=decisions[i],
                reasons=[
                    ReasonOut(feature=r.feature, contribution=r.contribution) for r in reasons[i]
                ],
                feature_age_seconds={
                    view: None if ts[i] is None else round(now - ts[i], 3)  # type: ignore[operator]
                    for view, ts in read.timestamps.items()
                },
                missing_features=[
                    n for n in names if read.columns[n][i] is None and n not in read.stale[i]
                ],
                stale_features=stale,
                features=_features(read.columns, names, i) if explain else None,
                challenger=_shadow(challenger, i) if explain and challenger else None,
            )
        )
    return results, scored


def _reasons(scored: Scored, i: int) -> list[ReasonOut]:
    return [ReasonOut(feature=r.feature, contribution=r.contribution) for r in scored.reasons(i)]


def _shadow(scored: Scored, i: int) -> ShadowResult:
    return ShadowResult(
        model_version=scored.version,
        score=float(scored.scores[i]),
        decision=scored.decisions[i],
        reasons=_reasons(scored, i),
    )


def shadow_log(shadow: Scored) -> dict[str, Any]:
    """The challenger's scores and decisions for the request's log line, in record order."""
    return {
        "model_version": shadow.version,
        "scores": [round(s, 6) for s in shadow.scores.tolist()],
        "decisions": shadow.decisions.tolist(),
    }


def _features(columns: dict[str, list[Any]], names: list[str], i: int) -> dict[str, float | None]:
    return {n: None if columns[n][i] is None else float(columns[n][i]) for n in names}
