"""Per-request plumbing as plain ASGI middleware: request id, latency metric, one log line.

The request id is the caller's ``X-Request-ID`` when it is a plain token (so a trace spans
the caller's logs and ours); otherwise, or when absent, a new one. It is echoed in the
response's header and body and written in the access log line.

Plain ASGI rather than Starlette's BaseHTTPMiddleware, which wraps every request in
extra tasks and streams; this runs on the hot path of every call.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.metrics import Metrics

ACCESS_LOG = logging.getLogger("serving.access")
REQUEST_ID_HEADER = b"x-request-id"
# A caller's id is kept if it is a plain token: no spaces or control bytes to forge log
# lines or headers with, and bounded, since it is stored with every log line.
REQUEST_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's ``X-Request-ID`` if it is a plain token, else a new random id."""
    for name, value in headers:
        if name.lower() == REQUEST_ID_HEADER and REQUEST_ID.fullmatch(value):
            return value.decode()
    return uuid.uuid4().hex


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
        state["request_id"] = request_id(scope.get("headers", []))
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append(
                    (REQUEST_ID_HEADER, state["request_id"].encode())
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
        if "challenger" in state:  # the shadow model's scores, set by the scoring routes
            record["challenger"] = state["challenger"]
        if "features" in state:  # set by the scoring routes only when this log is at DEBUG
            record["features"] = state["features"]
        ACCESS_LOG.info(json.dumps(record))
