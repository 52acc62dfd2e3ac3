"""Load shedding: a worker already scoring its limit of requests answers 503 at once.

It counts requests in flight, answers before any work and keeps the connection. uvicorn's
``limit_concurrency`` alone closes connections, and the callers' reconnects then wait in the
kernel's accept backlog, where no limit applies (docs/performance.md, "Serving: load shedding").
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from serving.metrics import Metrics

_BODY = json.dumps({"detail": "overloaded: too many requests in flight; retry later"}).encode()
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_BODY)).encode()),
    (b"retry-after", b"1"),
]


class LoadShedder:
    """Admit at most ``limit`` scoring requests (paths under ``/v1/``) per worker at a time.

    Health, readiness, metrics and admin calls always pass: they must answer under load.
    """

    def __init__(self, app: ASGIApp, limit: int, metrics: Metrics) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.metrics.errors.labels("overloaded").inc()
            await send({"type": "http.response.start", "status": 503, "headers": _HEADERS})
            await send({"type": "http.response.body", "body": _BODY})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
