"""Load shedding: a worker already scoring its limit of requests answers 503 at once.

uvicorn's ``limit_concurrency`` alone did not bound latency under overload: it counts open
connections, answers 503 with ``Connection: close``, and the callers' reconnects then wait
in the kernel's accept backlog, where no limit applies. Measured with verify.faults_online's
open-loop load at ~2x capacity (one worker on its own core of a shared 2-core box, 3 s):
uvicorn's limit alone (200) took 9-11 s to answer 3 s of load, 503s at p99 6.7-6.9 s; this
limiter (100 in flight, limit_concurrency 1000) finished in 3.2-3.6 s, 503s at p99
0.2-0.4 s. It counts requests in flight, answers before any work, and keeps the connection.
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
