"""Per-request plumbing as plain ASGI middleware: request id, body limit, one log line.

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

log = logging.getLogger("serving.access")


class BodyTooLarge(Exception):
    """A chunked body grew past the limit while being read (no Content-Length to check)."""


class AccessMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes

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

        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            status = 413
            self.metrics.errors.labels("payload_too_large").inc()
            await _json(send, 413, {"detail": f"body exceeds {self.max_body} bytes"})
        else:
            received = 0

            async def receive_limited() -> Message:
                nonlocal received
                message = await receive()
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge(f"body exceeds {self.max_body} bytes")
                return message

            try:
                await self.app(scope, receive_limited, send_wrapper)
            finally:
                self._finish(scope, state, status, started)
            return
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
        if "features" in state and log.isEnabledFor(logging.DEBUG):
            record["features"] = state["features"]
        log.info(json.dumps(record))


async def _json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(payload)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
