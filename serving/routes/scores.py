"""``GET /v1/scores/{user_id}``: a user's latest score as the nightly job published it."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from core.contract import BATCH_SCORE_VIEW
from serving.deps import StateDep
from serving.schemas import ErrorResponse, PublishedScoreResponse

router = APIRouter(
    prefix="/v1/scores",
    tags=["scores"],
)


@router.get(
    "/{user_id}",
    response_model=PublishedScoreResponse,
    responses={404: {"model": ErrorResponse, "description": "nothing published for the user"}},
)
async def published_score(
    user_id: Annotated[int, Path(ge=0, lt=2**63)],  # an int64 key, as in the request body
    state: StateDep,
) -> PublishedScoreResponse:
    read = await state.scores.read([{"user_id": user_id}], state.timeout_s)
    score = read.columns["score"][0]
    if score is None:
        raise HTTPException(
            404,
            f"no published nightly score for user {user_id}; "
            "the batch job publishes them with `python -m batch score --publish`",
        )
    (ts,) = read.timestamps[BATCH_SCORE_VIEW]
    return PublishedScoreResponse(
        user_id=user_id,
        score=score,
        model_version=read.columns["model_version"][0],
        scored_transaction_id=read.columns["scored_transaction_id"][0],
        age_seconds=None if ts is None else round(time.time() - ts, 3),
    )
