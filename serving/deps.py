"""What a route can ask for: the worker's serving state and the API-key check.

Routes declare these as ``Annotated`` parameters (``state: StateDep``); FastAPI resolves
each once per request.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import SecretStr

from core.settings import Settings
from serving.feature_log import FeatureLog
from serving.metrics import Metrics
from serving.model import ServedModels
from serving.online import OnlineFeatureReader
from serving.schemas import ErrorResponse


@dataclass
class ServingState:
    """Everything the lifespan opens once per worker."""

    settings: Settings
    metrics: Metrics
    reader: OnlineFeatureReader
    scores: OnlineFeatureReader  # the published nightly scores
    model: ServedModels  # .current: the Models a request scores with
    service_name: str
    timeout_s: float
    feature_log: FeatureLog | None = None  # FEATURE_LOG_DIR: the served vectors, for skew checks


async def get_state(request: Request) -> ServingState:
    state: ServingState = request.app.state.serving
    return state


StateDep = Annotated[ServingState, Depends(get_state)]

# auto_error=False: a missing key gets the same 401 as a wrong one, not FastAPI's 403.
api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="the API_KEY the service was started with"
)
APIKeyDep = Annotated[str | None, Security(api_key_header)]

UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "missing or wrong X-API-Key"}
}


def check_api_key(given: str | None, expected: SecretStr) -> None:
    """Raise 401 unless ``given`` is the key; compared in constant time, whatever it is."""
    want = expected.get_secret_value().encode()
    if given is None or not secrets.compare_digest(given.encode(), want):
        raise HTTPException(401, "missing or wrong API key (X-API-Key header)")


async def require_api_key(state: StateDep, key: APIKeyDep) -> None:
    """The dependency ``create_app`` puts on the secured routes when API_KEY is set."""
    if state.settings.api_key is None:  # never included then; refuse rather than let through
        raise HTTPException(401, "no API key is configured")
    check_api_key(key, state.settings.api_key)
