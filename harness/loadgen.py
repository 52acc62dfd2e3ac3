"""A small HTTP/1.1 load generator on loopback: open-loop at a fixed rate, or closed-loop.

Why not wrk: the fault proofs need every response's status, latency and body (to compare
scores with those given before the fault), and an open-loop rate, which wrk lacks (it
waits for each answer before sending the next, hiding a server that falls behind). Latency
here is measured from the time a request was *due*, so a backlog on the client side counts
against the server, as it would for a real caller (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import uvloop

TIMED_OUT = 0  # a Sample.status: no answer within the timeout
REFUSED = -1  # a Sample.status: the connection was refused or reset
# As client pools do, an idle connection is dropped before uvicorn's keep-alive timeout (5 s)
# closes it, so a request is never written to a connection the server is closing.
IDLE_EXPIRY_S = 4.0


@dataclass(frozen=True)
class Sample:
    """One request: when it was due, how long it took, what came back."""

    due: float  # time.perf_counter() when it was due
    latency: float
    status: int  # or TIMED_OUT / REFUSED: no HTTP answer
    body: bytes
    key: int  # index of the request in the set it was drawn from
    lag: float  # from due to written: the client's own delay (connection wait included)
    retry_after: bytes | None = None  # the Retry-After header, when the answer had one


def post(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """A keep-alive HTTP/1.1 POST of a JSON body, as raw bytes."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


Reply = tuple[int, bytes, bool, bytes | None]  # status, body, Connection: close, Retry-After


class _Conn(asyncio.Protocol):
    """One keep-alive connection; parses the status, Content-Length, Connection, Retry-After."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Reply] | None = None
        self._buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return
        length, close, retry_after = 0, False, None
        for line in bytes(self._buf[:end]).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
            elif name == b"retry-after":
                retry_after = value.strip()
        if len(self._buf) < end + 4 + length:
            return
        status = int(self._buf[9:12])
        body = bytes(self._buf[end + 4 : end + 4 + length])
        del self._buf[: end + 4 + length]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, body, close, retry_after))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionResetError("connection closed"))


class _Pool:
    """Keep-alive connections to one server; opens more when all are busy, up to a bound."""

    def __init__(self, port: int, max_connections: int) -> None:
        self._port = port
        self._idle: list[tuple[_Conn, float]] = []  # with the time each went idle
        self._slots = asyncio.Semaphore(max_connections)

    async def request(self, raw: bytes, sent: list[float], timeout_s: float) -> Reply:
        loop = asyncio.get_running_loop()
        async with self._slots:
            conn = None
            while self._idle and conn is None:
                conn, idle_since = self._idle.pop()
                if time.perf_counter() - idle_since > IDLE_EXPIRY_S:
                    conn.close()
                    conn = None
                elif conn.transport is None or conn.transport.is_closing():
                    conn = None
            if conn is None:
                _, conn = await loop.create_connection(_Conn, "127.0.0.1", self._port)
            assert conn.transport is not None
            conn.waiter = waiter = loop.create_future()
            expire = loop.call_later(timeout_s, waiter.cancel)
            sent.append(time.perf_counter())
            conn.transport.write(raw)
            try:
                reply = await waiter
            except BaseException:
                conn.transport.close()
                raise
            finally:
                expire.cancel()
            if reply[2]:
                conn.transport.close()
            else:
                self._idle.append((conn, time.perf_counter()))
            return reply

    def close(self) -> None:
        for conn, _ in self._idle:
            conn.close()
        self._idle.clear()


async def _one(pool: _Pool, raw: bytes, key: int, due: float, timeout_s: float) -> Sample:
    sent: list[float] = []
    try:
        status, body, _, retry_after = await pool.request(raw, sent, timeout_s)
    except asyncio.CancelledError:  # no answer within timeout_s
        status, body, retry_after = TIMED_OUT, b"", None
    except OSError:
        status, body, retry_after = REFUSED, b"", None
    done = time.perf_counter()
    lag = (sent[0] if sent else done) - due
    return Sample(due, done - due, status, body, key, lag, retry_after)


async def _open_loop(
    port: int,
    requests: Sequence[bytes],
    rate: float,
    duration_s: float,
    max_connections: int,
    timeout_s: float,
) -> list[Sample]:
    pool = _Pool(port, max_connections)
    tasks: list[asyncio.Task[Sample]] = []
    t0 = time.perf_counter()
    total = int(rate * duration_s)
    i = 0
    while i < total:
        now = time.perf_counter()
        while i < total and t0 + i / rate <= now:  # everything due by now, at once
            raw = requests[i % len(requests)]
            due = t0 + i / rate
            tasks.append(asyncio.create_task(_one(pool, raw, i % len(requests), due, timeout_s)))
            i += 1
        await asyncio.sleep(0.001)
    samples = list(await asyncio.gather(*tasks))
    pool.close()
    return samples


async def _closed_loop(
    port: int, requests: Sequence[bytes], connections: int, duration_s: float, timeout_s: float
) -> list[Sample]:
    pool = _Pool(port, connections)
    end = time.perf_counter() + duration_s

    async def worker(offset: int) -> list[Sample]:
        out = []
        i = offset
        while time.perf_counter() < end:
            key = i % len(requests)
            out.append(await _one(pool, requests[key], key, time.perf_counter(), timeout_s))
            i += connections
        return out

    per_worker = await asyncio.gather(*(worker(c) for c in range(connections)))
    pool.close()
    return [s for samples in per_worker for s in samples]


def open_loop(
    port: int,
    requests: Sequence[bytes],
    rate: float,
    duration_s: float,
    *,
    max_connections: int = 1000,
    timeout_s: float = 10.0,
) -> list[Sample]:
    """Send ``rate`` requests a second for ``duration_s``, whatever the server's pace."""
    return uvloop.run(_open_loop(port, requests, rate, duration_s, max_connections, timeout_s))


def closed_loop(
    port: int,
    requests: Sequence[bytes],
    connections: int,
    duration_s: float,
    *,
    timeout_s: float = 10.0,
) -> list[Sample]:
    """``connections`` callers, each sending its next request when the last one returns."""
    return uvloop.run(_closed_loop(port, requests, connections, duration_s, timeout_s))
