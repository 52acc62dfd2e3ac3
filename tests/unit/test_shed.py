"""The load shedder (serving.shed), driven as ASGI middleware around a tiny app of our own.

Each test fails if the shedder is removed (nothing is refused) or stops releasing its slot
(a later request is refused although nothing is in flight).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
from starlette.types import Message, Receive, Scope, Send

from serving.metrics import Metrics
from serving.shed import LoadShedder

Reply = tuple[int, dict[bytes, bytes], bytes]


class Held:
    """An ASGI app whose requests wait for ``gate``; ``/v1/fail`` raises once let through."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.inside = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.inside += 1
        try:
            await self.gate.wait()
            if scope["path"] == "/v1/fail":
                raise RuntimeError("the app failed")
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"scored"})
        finally:
            self.inside -= 1


async def call(app: LoadShedder, path: str = "/v1/predict") -> Reply:
    """One POST through ``app``; the status, headers and body it sent."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    await app(scope, receive, send)
    assert sent and sent[0]["type"] == "http.response.start", sent
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m["body"] for m in sent[1:])


async def until_inside(inner: Held, n: int) -> None:
    for _ in range(1000):
        if inner.inside == n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{inner.inside} requests inside the app, expected {n}")


def overloaded(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("serving_errors_total", {"kind": "overloaded"})
    return value or 0.0


def run(test: Callable[[Held, LoadShedder, Metrics], Awaitable[None]], limit: int = 2) -> None:
    async def main() -> None:
        inner, metrics = Held(), Metrics()
        await test(inner, LoadShedder(inner, limit=limit, metrics=metrics), metrics)

    asyncio.run(main())


def test_admits_up_to_the_limit_then_answers_503_at_once() -> None:
    async def test(inner: Held, shed: LoadShedder, metrics: Metrics) -> None:
        admitted = [asyncio.create_task(call(shed)) for _ in range(2)]
        await until_inside(inner, 2)
        status, headers, body = await asyncio.wait_for(call(shed), 1.0)  # not queued
        assert status == 503
        assert headers[b"retry-after"] == b"1"
        assert headers[b"content-type"] == b"application/json"
        assert json.loads(body)["detail"].startswith("overloaded")
        assert int(headers[b"content-length"]) == len(body)
        assert inner.inside == 2  # the refused request never reached the app
        assert overloaded(metrics) == 1
        inner.gate.set()
        replies = await asyncio.gather(*admitted)
        assert [r[0] for r in replies] == [200, 200]

    run(test)


def test_health_and_admin_pass_at_the_limit() -> None:
    async def test(inner: Held, shed: LoadShedder, metrics: Metrics) -> None:
        held = asyncio.create_task(call(shed))
        await until_inside(inner, 1)
        others = [asyncio.create_task(call(shed, p)) for p in ("/ready", "/admin/reload")]
        await until_inside(inner, 3)  # both reached the app although the limit was reached
        inner.gate.set()
        assert [r[0] for r in await asyncio.gather(held, *others)] == [200, 200, 200]
        assert overloaded(metrics) == 0

    run(test, limit=1)


def test_a_finished_request_frees_its_slot() -> None:
    async def test(inner: Held, shed: LoadShedder, metrics: Metrics) -> None:
        inner.gate.set()
        statuses = [(await call(shed))[0] for _ in range(5)]
        assert statuses == [200] * 5
        assert shed.in_flight == 0

    run(test, limit=1)


def test_a_failing_request_frees_its_slot() -> None:
    async def test(inner: Held, shed: LoadShedder, metrics: Metrics) -> None:
        inner.gate.set()
        for _ in range(3):
            with pytest.raises(RuntimeError, match="the app failed"):
                await call(shed, "/v1/fail")
        assert (await call(shed))[0] == 200
        assert shed.in_flight == 0

    run(test, limit=1)


def test_a_cancelled_request_frees_its_slot() -> None:
    """The client went away: the server cancels the request's task mid-flight."""

    async def test(inner: Held, shed: LoadShedder, metrics: Metrics) -> None:
        for _ in range(3):
            gone = asyncio.create_task(call(shed))
            await until_inside(inner, 1)
            gone.cancel()
            with pytest.raises(asyncio.CancelledError):
                await gone
            assert inner.inside == 0
        inner.gate.set()
        assert (await call(shed))[0] == 200
        assert shed.in_flight == 0
        assert overloaded(metrics) == 0

    run(test, limit=1)
