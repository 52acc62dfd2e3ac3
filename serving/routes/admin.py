"""``POST /admin/reload``: follow the registry's aliases now, in the worker that answers."""

from __future__ import annotations

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
    """Check the registry's aliases (or MODEL_DIR) now, in this worker."""
    swapped = await state.model.check(force=True)
    if state.model.refused is not None and not swapped:
        raise HTTPException(
            409, f"new artifact refused, still serving the old one: {state.model.refused}"
        )
    return ReloadResponse(model_version=state.model.version, reloaded=swapped)
