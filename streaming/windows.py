"""Per-user window state with event-time semantics and a bounded allowed lateness.

In-order events take ``core.aggregations.UserWindowState``'s O(1) incremental path.
An event older than the user's newest but within the allowed lateness is inserted
into a short history and the state is rebuilt by replaying that history through
the same ``UserWindowState``, so both paths give exactly the backfill's values
(``core.aggregations.backfill_sql``). Anything older is ``late``.

Lateness is judged per user, against that user's newest event time. Kafka keeps a
user's events in order within its partition, so the decision does not depend on
how many workers or partitions run (a global watermark would).

Users are grouped into ``SHARDS`` fixed shards, and the dataflow keeps one Bytewax state
per shard rather than per user: Bytewax calls stateful logic once per open key per
micro-batch and routes, wraps and snapshots every keyed item, so per-user keys cost that
per event; with per-shard keys the stream after the input carries one item per shard per
micro-batch (figures: ``docs/performance.md``, "Streaming flow").

A transaction_id the user's history still holds is a re-delivery: it is scored again with
its original's aggregates and counted once (``EventTimeWindows.apply``).

Events at the same instant for one user (ties) all count each other, as in the backfill:
when a tie arrives in the same micro-batch, every event of the tie is scored with the
aggregates that include all of them. A tie split across micro-batches cannot change the
score already sent for its first event; the online store still ends equal to the backfill.
"""

from __future__ import annotations

import bisect
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bytewax.operators import StatefulBatchLogic

from core.aggregations import WINDOWS, UserWindowState
from streaming.records import Aggregates, Chunk, DeadLetter, Enriched, Stepped, WindowRow

_US = 1_000_000
MAX_WINDOW_US = max(int(w.window.total_seconds()) * _US for w in WINDOWS)
# Fixed for the life of a recovery store (snapshots are per shard); bounds useful workers.
SHARDS = 64


def shard_of(user_id: int) -> str:
    return str(user_id % SHARDS)


@dataclass(frozen=True)
class Applied:
    at_event: Aggregates
    latest: Aggregates
    version_us: int
    duplicate: bool = False  # a re-delivery: nothing changed, ``at_event`` is the original's


Item = tuple[int, int, float, int, str]  # ts_us, arrival seq, amount, merchant_id, txn id


@dataclass
class EventTimeWindows:
    """Pickled by Bytewax into recovery snapshots; the windows themselves are rebuilt from
    the history on first use after a restore."""

    lateness_us: int
    state: UserWindowState | None = field(default_factory=UserWindowState)
    # Sorted; enough to rebuild any allowed event.
    history: list[Item] = field(default_factory=list)
    seq: int = 0
    latest: Aggregates | None = None
    version_us: int = 0
    # The aggregates each transaction in the history was scored with, by transaction_id.
    scored: dict[str, Aggregates] = field(default_factory=dict)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "state": None}

    @property
    def newest_us(self) -> int | None:
        return self.history[-1][0] if self.history else None

    def apply(
        self, ts_us: int, amount: float, merchant_id: int, transaction_id: str = ""
    ) -> Applied | None:
        """Fold one event in; None means it is later than the allowed lateness.

        A transaction_id already in the history is a re-delivery (a producer retry, a
        replay): it changes nothing and gets its original's aggregates, so the windows
        never count it twice and it scores the same. Any older re-delivery is ``late``.
        """
        if transaction_id and transaction_id in self.scored:
            assert self.latest is not None
            return Applied(self.scored[transaction_id], self.latest, self.version_us, True)
        if self.state is None:  # restored from a snapshot
            self._rebuild(None)
        assert self.state is not None
        newest = self.newest_us
        self.seq += 1
        item = (ts_us, self.seq, amount, merchant_id, transaction_id)
        if newest is None or ts_us >= newest:
            at_event = self.state.apply(ts_us, amount, merchant_id)
            self.history.append(item)
            self.latest = at_event
        elif ts_us >= newest - self.lateness_us:
            bisect.insort(self.history, item)
            at_event = self._rebuild(item)
        else:
            return None
        if transaction_id:
            self.scored[transaction_id] = at_event
        self._prune()
        # Feast's Redis store skips a write whose timestamp is not newer than the stored
        # one, so a correction at the same newest time gets the next microsecond.
        self.version_us = max(self.history[-1][0], self.version_us + 1)
        assert self.latest is not None
        return Applied(at_event, self.latest, self.version_us)

    def _rebuild(self, inserted: Item | None) -> Aggregates:
        state = UserWindowState()
        at_event: Aggregates = {}
        for item in self.history:
            values = state.apply(item[0], item[2], item[3])
            if item == inserted:
                at_event = values
            self.latest = values
        self.state = state
        return at_event

    def _prune(self) -> None:
        """Keep what a rebuild needs: events that any allowed event's windows can reach,
        plus one older event for ``secs_since_last_txn``."""
        history = self.history
        cutoff = history[-1][0] - self.lateness_us - MAX_WINDOW_US
        if len(history) > 1 and history[1][0] < cutoff:  # O(1) when nothing is due
            drop = bisect.bisect_left(history, (cutoff,)) - 1
            for item in history[:drop]:
                self.scored.pop(item[4], None)
            del history[:drop]


class ShardWindows:
    """The window state of every user of one shard."""

    def __init__(self, lateness_us: int, users: dict[int, EventTimeWindows] | None = None):
        self.lateness_us = lateness_us
        self.users = users if users is not None else {}

    def step(self, chunks: Iterable[Chunk]) -> Stepped:
        """Fold a micro-batch's events in arrival order; late ones become dead letters."""
        applied_events: list[Enriched] = []
        at_event: list[Aggregates] = []
        dead: list[DeadLetter] = []
        touched: dict[int, EventTimeWindows] = {}
        ties: dict[tuple[int, int], list[int]] = {}  # (user, ts) -> indices into at_event
        for chunk in chunks:
            dead += chunk.dead
            for enriched in chunk.events:
                event = enriched.event
                txn = event.txn
                user = txn.user_id
                windows = self.users.get(user)
                if windows is None:
                    windows = self.users[user] = EventTimeWindows(self.lateness_us)
                applied = windows.apply(
                    event.ts_us, txn.amount, txn.merchant_id, txn.transaction_id
                )
                if applied is None:
                    detail = (
                        f"event time {event.ts_us} us is older than newest "
                        f"{windows.newest_us} us - lateness"
                    )
                    dead.append(DeadLetter(event.raw, "late", detail))
                    continue
                if not applied.duplicate:
                    touched[user] = windows
                    peers = ties.setdefault((user, event.ts_us), [])
                    for i in peers:  # the newest peer's aggregates count every peer
                        at_event[i] = applied.at_event
                        windows.scored[applied_events[i].event.txn.transaction_id] = (
                            applied.at_event
                        )
                    peers.append(len(at_event))
                applied_events.append(enriched)
                at_event.append(applied.at_event)
        rows: list[WindowRow] = [
            (u, w.version_us, w.latest) for u, w in touched.items() if w.latest is not None
        ]
        return Stepped(applied_events, at_event, rows, dead)


class ShardLogic(StatefulBatchLogic[Chunk, Stepped, bytes]):
    """Bytewax's per-key logic for one shard; snapshots are the pickled histories."""

    def __init__(self, lateness_us: int, resume: bytes | None) -> None:
        users = None if resume is None else pickle.loads(resume)
        self.windows = ShardWindows(lateness_us, users)

    def on_batch(self, values: list[Chunk]) -> tuple[Iterable[Stepped], bool]:
        return [self.windows.step(values)], StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.windows.users, protocol=pickle.HIGHEST_PROTOCOL)
