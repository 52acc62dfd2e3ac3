"""Private Kafka topics for one run of the flow, and free local ports for a Bytewax cluster.

Tests, proofs and benchmarks share the one broker; uuid-tagged topics keep runs apart.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    transactions: str
    scores: str
    dlq: str

    @classmethod
    def fresh(cls, prefix: str) -> Topics:
        tag = uuid.uuid4().hex[:10]
        return cls(f"{prefix}-tx-{tag}", f"{prefix}-scores-{tag}", f"{prefix}-dlq-{tag}")

    def env(self) -> dict[str, str]:
        """The flow's topic settings, as environment variables."""
        return {
            "STREAM_TRANSACTIONS_TOPIC": self.transactions,
            "STREAM_SCORES_TOPIC": self.scores,
            "STREAM_DEAD_LETTER_TOPIC": self.dlq,
        }


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free right now on loopback (for ``bytewax.run -a``)."""
    socks = [socket.socket() for _ in range(n)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports
