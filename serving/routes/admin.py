"""``POST /admin/reload``: load a new model artifact now, in the worker that answers."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException

from serving.deps import StateDep
from serving.schemas import ErrorResponse, ReloadResponse

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
)


@router.post(
    "/reload",
    response_model=ReloadResponse,
    responses={409: {"model": ErrorResponse, "description": "artifact refused"}},
)
async def reload(state: StateDep) -> ReloadResponse:
    try:
        swapped = await asyncio.to_thread(state.model.reload_if_changed, True)
    except Exception as exc:
        state.metrics.reloads.labels("refused").inc()
        raise HTTPException(409, f"new artifact refused, still serving the old one: {exc}") from exc
    state.metrics.reloads.labels("ok" if swapped else "unchanged").inc()
    return ReloadResponse(model_version=state.model.predictor.version, reloaded=swapped)
