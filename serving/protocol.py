"""uvicorn's httptools protocol, with TCP_NODELAY set on every connection.

With ``--workers`` > 1 uvicorn binds the listening socket itself, leaving its ``proto`` at 0;
accepted sockets inherit that, and asyncio only sets TCP_NODELAY when ``proto`` is
IPPROTO_TCP (uvicorn#3149). Nagle's algorithm then holds each response body until the
client's delayed ACK (docs/performance.md, "Serving: TCP_NODELAY").
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
