"""Liveness, readiness and Prometheus metrics: unsecured, and never shed (serving.shed)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from serving.deps import StateDep
from serving.online import OnlineStoreUnavailable

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "a dependency is not ready"}})
async def ready(state: StateDep) -> JSONResponse:
    """Readiness: Redis answers, the registry and the model are loaded; names the versions
    in use and why the newest candidate was refused, if it was (still ready then)."""
    # The lifespan loaded the registry and the model before the server took a request.
    checks = {"registry": True, "model": True, "redis": False}
    try:
        await state.reader.ping(state.timeout_s)
        checks["redis"] = True
    except OnlineStoreUnavailable:
        pass
    ok = all(checks.values())
    models = state.model.current
    body: dict[str, Any] = {
        "status": "ready" if ok else "not ready",
        "checks": checks,
        "model_version": models.champion.version,
        "challenger_version": None if models.challenger is None else models.challenger.version,
        # A refused candidate does not make the worker unready: the previous model serves.
        "model_refused": state.model.refused,
    }
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(state: StateDep) -> Response:
    payload, content_type = state.metrics.exposition()
    return Response(payload, media_type=content_type)
