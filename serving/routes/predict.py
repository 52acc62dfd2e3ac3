"""``POST /v1/predict`` and ``POST /v1/predict/batch``: score transactions from the online store."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import pydantic_core
from fastapi import APIRouter, HTTPException, Query, Request, Response

from serving.access import ACCESS_LOG
from serving.deps import ServingState, StateDep
from serving.schemas import (
    ErrorResponse,
    PredictManyRequest,
    PredictManyResponse,
    PredictRequest,
    PredictResponse,
    check_extra_fields,
    unknown_fields,
)
from serving.scoring import Result, score_rows, shadow_log

# Every status a route can answer is documented, so clients (and the fuzzer) can rely on it.
router = APIRouter(
    prefix="/v1/predict",
    tags=["predict"],
    responses={
        400: {"model": ErrorResponse, "description": "the body is not decodable JSON"},
        413: {"model": ErrorResponse, "description": "body or record count over its limit"},
    },
)
Explain = Annotated[bool, Query(description="also return the feature values used")]


def _extra_fields(state: ServingState, body: PredictRequest | PredictManyRequest) -> None:
    """Unknown fields: refused (SERVING_EXTRA_FIELDS=reject) or counted and ignored."""
    locs = unknown_fields(body)
    if locs:
        check_extra_fields(locs, state.settings.serving_extra_fields)
        state.metrics.extra_fields.inc(len(locs))


async def _score(
    state: ServingState, request: Request, rows: list[dict[str, Any]], explain: bool
) -> tuple[str, list[Result]]:
    """Score with the models current when the request arrived, and record the metrics."""
    models = state.model.current
    version = models.champion.version
    request.state.model_version = version
    log_features = ACCESS_LOG.isEnabledFor(logging.DEBUG)
    out = await score_rows(
        state.reader, models, rows, state.timeout_s, explain or log_features, state.feature_log
    )
    if out.scored.challenger is not None:  # logged and measured, returned only with explain
        request.state.challenger = shadow_log(out.scored.challenger)
        state.metrics.observe_shadow(out.scored)
    if log_features:  # the access log line carries them (serving.access)
        request.state.features = [r["features"] for r in out.results]
        if not explain:
            for r in out.results:
                r["features"] = r["challenger"] = None
    state.metrics.observe(out.scored.champion, out.read, out.now)
    return version, out.results


def _json(payload: dict[str, Any]) -> Response:
    """The answer as JSON, not validated again against the response model (which documents
    it): it is built from typed values, and re-validating 100 records cost more than scoring."""
    return Response(pydantic_core.to_json(payload), media_type="application/json")


@router.post("", response_model=PredictResponse)
async def predict(
    body: PredictRequest, request: Request, state: StateDep, explain: Explain = False
) -> Response:
    _extra_fields(state, body)
    version, (result,) = await _score(state, request, [body.known()], explain)
    return _json(
        result
        | {
            "request_id": request.state.request_id,
            "model_version": version,
            "feature_service": state.service_name,
        }
    )


@router.post("/batch", response_model=PredictManyResponse)
async def predict_many(
    body: PredictManyRequest, request: Request, state: StateDep, explain: Explain = False
) -> Response:
    """Several records in one call, one result each, in request order."""
    limit = state.settings.serving_max_batch
    if len(body.records) > limit:
        raise HTTPException(413, f"at most {limit} records per request")
    _extra_fields(state, body)
    version, results = await _score(state, request, [r.known() for r in body.records], explain)
    return _json(
        {
            "request_id": request.state.request_id,
            "model_version": version,
            "feature_service": state.service_name,
            "results": results,
        }
    )
