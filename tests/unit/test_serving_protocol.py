"""TCP_NODELAY on every connection, even from a listener whose proto is 0 (uvicorn#3149)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from serving.protocol import NoDelayHttpToolsProtocol


async def _app(scope: object, receive: object, send: object) -> None:  # never called
    raise AssertionError


def _nodelay_after_accept(protocol: type[HttpToolsProtocol]) -> int:
    """Accept one connection as uvicorn's workers do, and read the accepted socket's option."""
    config = Config(app=_app, loop="asyncio", http=protocol)
    config.load()

    async def accept() -> int:
        listener = socket.socket(socket.AF_INET)  # proto 0, like uvicorn's bind_socket
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with listener, socket.create_connection(listener.getsockname()):
            conn, _ = listener.accept()
            transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
                lambda: protocol(config=config, server_state=ServerState(), app_state={}), conn
            )
            value = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            transport.close()
            return value

    return asyncio.run(accept())


@pytest.mark.parametrize(
    ("protocol", "expected"), [(HttpToolsProtocol, 0), (NoDelayHttpToolsProtocol, 1)]
)
def test_nodelay_is_set_on_connections_from_a_proto_0_listener(
    protocol: type[HttpToolsProtocol], expected: int
) -> None:
    assert bool(_nodelay_after_accept(protocol)) == bool(expected)
