"""The FastAPI app factory: middleware, error mapping, routers, and the lifespan that loads once."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from feast import FeatureService, FeatureStore

from core.contract import BATCH_SCORE_VIEW
from core.models import ModelWatcher
from core.redis_url import describe
from core.settings import Settings, get_settings
from core.store import feature_service, open_store
from serving import routes
from serving.access import AccessMiddleware
from serving.deps import UNAUTHORIZED, ServingState, require_api_key
from serving.feature_log import FeatureLog
from serving.logs import configure_logging
from serving.metrics import Metrics
from serving.model import ServedModels
from serving.online import (
    OnlineFeatureReader,
    OnlineStoreRefused,
    OnlineStoreUnavailable,
    redis_client,
)
from serving.schemas import ErrorResponse, forbid_extra_properties
from serving.shed import LoadShedder

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    metrics = Metrics(_batch_scores(settings))
    app = FastAPI(
        title="fraud-scoring",
        summary="Scores card transactions from the Feast online store with the shared predictor.",
        version="1",
        lifespan=functools.partial(_lifespan, settings=settings, metrics=metrics),
        max_body_size=settings.serving_max_body_bytes,  # FastAPI answers 413 past it
        responses={503: {"model": ErrorResponse, "description": "online store unavailable"}},
    )
    app.add_middleware(AccessMiddleware, metrics=metrics)
    # Outermost, so a shed request costs no log line: it is counted in serving_errors.
    app.add_middleware(LoadShedder, limit=settings.serving_max_in_flight, metrics=metrics)
    _error_handlers(app, metrics)
    _include_routers(app, settings)
    if settings.serving_extra_fields == "reject":
        app.openapi = functools.partial(forbid_extra_properties, app.openapi)  # type: ignore[method-assign]
    return app


def _include_routers(app: FastAPI, settings: Settings) -> None:
    """Secure the scoring and admin routes when API_KEY is set (only then does /docs show it)."""
    for router in routes.secured:
        if settings.api_key is None:
            app.include_router(router)
        else:
            app.include_router(
                router, dependencies=[Depends(require_api_key)], responses=UNAUTHORIZED
            )
    for router in routes.public:
        app.include_router(router)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI, settings: Settings, metrics: Metrics) -> AsyncIterator[None]:
    """Open the store, Redis and the model once per worker; ``app.state.serving`` holds them."""
    store = open_store(settings)
    service = feature_service(store)
    client = redis_client(
        settings.redis_connection_string, settings.redis_timeout_ms / 1000, settings.redis_type
    )
    max_age = settings.serving_max_age_seconds
    state = app.state.serving = ServingState(
        settings=settings,
        metrics=metrics,
        reader=OnlineFeatureReader(store, service, client, max_age),
        scores=OnlineFeatureReader(store, _scores_service(store), client, max_age),
        model=ServedModels(await asyncio.to_thread(ModelWatcher, settings, service), metrics),
        service_name=service.name,
        timeout_s=settings.redis_timeout_ms / 1000,
        feature_log=_feature_log(settings, store, service),
    )
    state.metrics.set_max_ages({p.name: p.max_age_s for p in state.reader.plans if p.max_age_s})
    await _first_connection(state)
    gc.freeze()  # the registry's long-lived objects leave full collections (docs/performance.md)
    watcher = asyncio.create_task(state.model.watch(settings.model_reload_interval_s))
    log.info("serving %s with model %s", service.name, state.model.version)
    yield
    watcher.cancel()
    if state.feature_log is not None:
        await asyncio.to_thread(state.feature_log.close)
    await client.aclose()


async def _first_connection(state: ServingState) -> None:
    """Open a connection before traffic: Redis may come up later, credentials won't."""
    try:
        await state.reader.ping(1.0)
    except OnlineStoreRefused as exc:
        where = describe(state.settings.redis_connection_string)
        log.error("Redis at %s refused REDIS_CONNECTION_STRING's credentials: %s", where, exc)
        raise RuntimeError(f"Redis at {where} refused the credentials: {exc}") from exc
    except OnlineStoreUnavailable:
        pass


def _feature_log(
    settings: Settings, store: FeatureStore, service: FeatureService
) -> FeatureLog | None:
    if settings.feature_log_dir is None:
        return None
    return FeatureLog(store, service, settings.feature_log_dir, settings.feature_log_sample_rate)


def _batch_scores(settings: Settings) -> Path | None:
    """The nightly job's scores root, whose newest manifest /metrics exports (local only)."""
    root = str(settings.batch_output_dir or settings.data_dir / "scores")
    return None if "://" in root else Path(root)


def _scores_service(store: FeatureStore) -> FeatureService:
    """The published nightly scores, read like any other view (not part of the model)."""
    return FeatureService(
        name="published_scores", features=[store.get_feature_view(BATCH_SCORE_VIEW)]
    )


def _error_handlers(app: FastAPI, metrics: Metrics) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.errors.labels("validation").inc()
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(OnlineStoreUnavailable)
    async def unavailable(request: Request, exc: OnlineStoreUnavailable) -> JSONResponse:
        metrics.errors.labels("online_store_unavailable").inc()
        return JSONResponse(
            {"detail": f"online store unavailable: {exc}"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kinds = {401: "unauthorized", 404: "not_found", 409: "conflict", 413: "payload_too_large"}
        kind = kinds.get(exc.status_code, "http")
        metrics.errors.labels(kind).inc()
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
