"""Per-request plumbing as plain ASGI middleware: request id, latency metric, one log line.

Plain ASGI rather than Starlette's BaseHTTPMiddleware, which wraps every request in
extra tasks and streams; this runs on the hot path of every call.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.metrics import Metrics

ACCESS_LOG = logging.getLogger("serving.access")


class AccessMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = uuid.uuid4().hex
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append(
                    (b"x-request-id", state["request_id"].encode())
                )
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._finish(scope, state, status, started)

    def _finish(self, scope: Scope, state: dict[str, Any], status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        self.metrics.latency.labels(endpoint, str(status)).observe(elapsed)
        record = {
            "request_id": state["request_id"],
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "latency_ms": round(elapsed * 1000, 3),
            "model_version": state.get("model_version"),
        }
        if "features" in state:  # set by the scoring routes only when this log is at DEBUG
            record["features"] = state["features"]
        ACCESS_LOG.info(json.dumps(record))
