"""The FastAPI app factory: routes, error mapping, and the lifespan that loads things once."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from feast import FeatureService, FeatureStore

from core.contract import BATCH_SCORE_VIEW
from core.redis_url import describe
from core.settings import Settings, get_settings
from core.store import feature_service, open_store
from serving.access import AccessMiddleware
from serving.feature_log import FeatureLog
from serving.logs import configure_logging
from serving.metrics import Metrics
from serving.model import ModelHolder
from serving.online import (
    OnlineFeatureReader,
    OnlineStoreRefused,
    OnlineStoreUnavailable,
    redis_client,
)
from serving.schemas import (
    BatchScoreResponse,
    ErrorResponse,
    PredictBatchRequest,
    PredictBatchResponse,
    PredictRequest,
    PredictResponse,
    PredictResult,
    ReloadResponse,
)
from serving.scoring import score_rows
from serving.shed import LoadShedder

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything the lifespan opens once per worker."""

    settings: Settings
    reader: OnlineFeatureReader
    scores: OnlineFeatureReader  # the published nightly scores
    model: ModelHolder
    service_name: str
    timeout_s: float
    feature_log: FeatureLog | None = None  # FEATURE_LOG_DIR: the served vectors, for skew checks


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = open_store(settings)
        service = feature_service(store)
        client = redis_client(settings.redis_connection_string, settings.redis_timeout_ms / 1000)
        max_age = settings.serving_max_age_seconds
        scores_service = _scores_service(store)
        app.state.runtime = Runtime(
            settings=settings,
            reader=OnlineFeatureReader(store, service, client, max_age),
            scores=OnlineFeatureReader(store, scores_service, client, max_age),
            model=ModelHolder(settings.model_path, service),
            service_name=service.name,
            timeout_s=settings.redis_timeout_ms / 1000,
            feature_log=_feature_log(settings, store, service),
        )
        try:  # open a connection before traffic; Redis may come later, credentials won't
            await app.state.runtime.reader.ping(1.0)
        except OnlineStoreRefused as exc:
            where = describe(settings.redis_connection_string)
            log.error("Redis at %s refused REDIS_CONNECTION_STRING's credentials: %s", where, exc)
            raise RuntimeError(f"Redis at {where} refused the credentials: {exc}") from exc
        except OnlineStoreUnavailable:
            pass
        # Feast, pandas and the registry leave ~280k long-lived objects; frozen, the collector
        # stops rescanning them in full collections: p99 at 8 connections fell 65-130 -> 13 ms.
        gc.freeze()
        watcher = asyncio.create_task(_watch_model(app.state.runtime, metrics))
        log.info(
            "serving %s with model %s", service.name, app.state.runtime.model.predictor.version
        )
        yield
        watcher.cancel()
        if app.state.runtime.feature_log is not None:
            await asyncio.to_thread(app.state.runtime.feature_log.close)
        await client.aclose()

    app = FastAPI(
        title="fraud-scoring",
        summary="Scores card transactions from the Feast online store with the shared predictor.",
        version="1",
        lifespan=lifespan,
        max_body_size=settings.serving_max_body_bytes,  # FastAPI answers 413 past it
        responses={503: {"model": ErrorResponse, "description": "online store unavailable"}},
    )
    app.add_middleware(AccessMiddleware, metrics=metrics)
    # Outermost, so a shed request costs no log line: it is counted in serving_errors.
    app.add_middleware(LoadShedder, limit=settings.serving_max_in_flight, metrics=metrics)
    _error_handlers(app, metrics)
    _routes(app, metrics, settings)
    return app


def _feature_log(
    settings: Settings, store: FeatureStore, service: FeatureService
) -> FeatureLog | None:
    if settings.feature_log_dir is None:
        return None
    return FeatureLog(store, service, settings.feature_log_dir, settings.feature_log_sample_rate)


def _scores_service(store: FeatureStore) -> FeatureService:
    """The published nightly scores, read like any other view (not part of the model)."""
    return FeatureService(
        name="published_scores", features=[store.get_feature_view(BATCH_SCORE_VIEW)]
    )


async def _watch_model(runtime: Runtime, metrics: Metrics) -> None:
    while True:
        await asyncio.sleep(runtime.settings.model_reload_interval_s)
        try:
            if await asyncio.to_thread(runtime.model.reload_if_changed):
                metrics.reloads.labels("ok").inc()
        except Exception as exc:  # a half-written or mismatched artifact: keep serving the old
            metrics.reloads.labels("refused").inc()
            log.warning("model reload refused: %s", exc)


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _api_key_check(settings: Settings) -> Any:
    async def check(x_api_key: Annotated[str | None, Header()] = None) -> None:
        if settings.api_key is None:
            return
        expected = settings.api_key.get_secret_value().encode()
        if x_api_key is None or not secrets.compare_digest(x_api_key.encode(), expected):
            raise HTTPException(401, "missing or wrong API key (X-API-Key header)")

    return check


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


def _routes(app: FastAPI, metrics: Metrics, settings: Settings) -> None:
    secured = [Depends(_api_key_check(settings))]
    # Every status a route can answer is documented, so clients (and the fuzzer) can rely on it.
    unauthorized: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorResponse, "description": "missing or wrong X-API-Key"}
    }
    with_body = unauthorized | {
        400: {"model": ErrorResponse, "description": "the body is not decodable JSON"},
        413: {"model": ErrorResponse, "description": "body or batch over its limit"},
    }
    max_batch = settings.serving_max_batch

    async def score(
        request: Request, rows: list[dict[str, Any]], explain: bool
    ) -> tuple[Runtime, str, list[PredictResult]]:
        """Score with the model current when the request arrived, and record the metrics."""
        runtime = _runtime(request)
        predictor = runtime.model.predictor
        request.state.model_version = predictor.version
        results = await score_rows(
            runtime.reader, predictor, rows, runtime.timeout_s, explain, runtime.feature_log
        )
        _observe(metrics, results)
        return runtime, predictor.version, results

    @app.post(
        "/v1/predict", response_model=PredictResponse, dependencies=secured, responses=with_body
    )
    async def predict(
        body: PredictRequest,
        request: Request,
        explain: Annotated[bool, Query(description="also return the feature values used")] = False,
    ) -> PredictResponse:
        runtime, version, (result,) = await score(request, [body.model_dump()], explain)
        return PredictResponse(
            request_id=request.state.request_id,
            model_version=version,
            feature_service=runtime.service_name,
            **result.model_dump(),
        )

    @app.post(
        "/v1/predict/batch",
        response_model=PredictBatchResponse,
        dependencies=secured,
        responses=with_body,
    )
    async def predict_batch(
        body: PredictBatchRequest,
        request: Request,
        explain: Annotated[bool, Query(description="also return the feature values used")] = False,
    ) -> PredictBatchResponse:
        if len(body.records) > max_batch:
            raise HTTPException(413, f"at most {max_batch} records per batch")
        rows = [r.model_dump() for r in body.records]
        runtime, version, results = await score(request, rows, explain)
        return PredictBatchResponse(
            request_id=request.state.request_id,
            model_version=version,
            feature_service=runtime.service_name,
            results=results,
        )

    @app.get(
        "/v1/scores/{user_id}",
        response_model=BatchScoreResponse,
        dependencies=secured,
        responses=unauthorized | {404: {"model": ErrorResponse}},
    )
    async def batch_score(
        user_id: Annotated[int, Path(ge=0, lt=2**63)],  # an int64 key, as in the request body
        request: Request,
    ) -> BatchScoreResponse:
        runtime = _runtime(request)
        read = await runtime.scores.read([{"user_id": user_id}], runtime.timeout_s)
        score = read.columns["score"][0]
        if score is None:
            raise HTTPException(
                404,
                f"no published nightly score for user {user_id}; "
                "the batch job publishes them with `python -m batch score --publish`",
            )
        (ts,) = read.timestamps[BATCH_SCORE_VIEW]
        return BatchScoreResponse(
            user_id=user_id,
            score=score,
            model_version=read.columns["model_version"][0],
            scored_transaction_id=read.columns["scored_transaction_id"][0],
            age_seconds=None if ts is None else round(time.time() - ts, 3),
        )

    @app.post(
        "/admin/reload",
        response_model=ReloadResponse,
        dependencies=secured,
        responses=unauthorized | {409: {"model": ErrorResponse, "description": "artifact refused"}},
    )
    async def reload(request: Request) -> ReloadResponse:
        runtime = _runtime(request)
        try:
            swapped = await asyncio.to_thread(runtime.model.reload_if_changed, True)
        except Exception as exc:
            metrics.reloads.labels("refused").inc()
            raise HTTPException(
                409, f"new artifact refused, still serving the old one: {exc}"
            ) from exc
        metrics.reloads.labels("ok" if swapped else "unchanged").inc()
        return ReloadResponse(model_version=runtime.model.predictor.version, reloaded=swapped)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"description": "a dependency is not ready"}})
    async def ready(request: Request) -> JSONResponse:
        """Readiness: Redis answers, the registry and the model are loaded."""
        runtime = getattr(request.app.state, "runtime", None)
        checks = {"registry": runtime is not None, "model": runtime is not None, "redis": False}
        if runtime is not None:
            try:
                await runtime.reader.ping(runtime.timeout_s)
                checks["redis"] = True
            except OnlineStoreUnavailable:
                pass
        ok = all(checks.values())
        body: dict[str, Any] = {"status": "ready" if ok else "not ready", "checks": checks}
        if runtime is not None:
            body["model_version"] = runtime.model.predictor.version
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        payload, content_type = metrics.exposition()
        return Response(payload, media_type=content_type)


def _observe(metrics: Metrics, results: list[Any]) -> None:
    """Record a request's results, folding repeats into one update per series.

    Each update of a multi-process metric costs a lock and a pid check (~4 us); one per
    record and feature made metrics a quarter of a 100-record batch's time.
    """
    for r in results:
        metrics.score.observe(r.score)
    oldest: dict[str, float] = {}
    for r in results:
        for view, age in r.feature_age_seconds.items():
            if age is not None and age > oldest.get(view, -1.0):
                oldest[view] = age
    for view, age in oldest.items():
        metrics.feature_age.labels(view).observe(age)
    for counter, names in (
        (metrics.missing, Counter(n for r in results for n in r.missing_features)),
        (metrics.stale, Counter(n for r in results for n in r.stale_features)),
    ):
        for name, count in names.items():
            counter.labels(name).inc(count)
