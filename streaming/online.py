"""Micro-batched writes of the fresh window aggregates to the Feast online store.

Each batch keeps only the newest value per user, then goes to the online store's
``online_write_batch`` with protos built here, skipping the DataFrame -> Arrow -> proto
conversion of ``store.push``/``write_to_online_store``. Measured here, 10k rows into the
local Redis, 3 runs on the shared 2-core box: online_write_batch 364-802 ms,
write_to_online_store 563-873 ms, push 735-744 ms. The store's own per-row work (key
serialisation, hashing, proto bytes, ~35 us/row) dominates, so the win that matters is
writing one row per user per batch, not one per event. The Redis store still compares
event timestamps, so an older value (a replay after a crash) never overwrites a newer one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from feast import FeatureStore, FeatureView
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Float64, Int64

from core.aggregations import ENTITY_KEY
from core.contract import WINDOWS_VIEW
from streaming.records import Aggregates, Update

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
Row = tuple[int, int, Aggregates]  # user_id, version_us, aggregates


def latest_per_user(updates: Sequence[Update]) -> list[Row]:
    """One row per user: its highest version in the batch."""
    rows: dict[int, Row] = {}
    for u in updates:
        user = u.enriched.event.txn.user_id
        if user not in rows or rows[user][1] < u.version_us:
            rows[user] = (user, u.version_us, u.latest)
    return list(rows.values())


def _value(v: int | float | None, kind: str) -> ValueProto:
    if v is None:
        return ValueProto()
    return ValueProto(int64_val=int(v)) if kind == "int" else ValueProto(double_val=float(v))


class OnlineWriter:
    """Writes ``latest_per_user`` rows of the windows view through Feast's online store."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.view: FeatureView = store.get_feature_view(WINDOWS_VIEW)
        kinds = {Int64: "int", Float64: "float"}
        self.kinds = {f.name: kinds[f.dtype] for f in self.view.features}  # type: ignore[index]
        self.provider = store._get_provider()

    def write(self, rows: Sequence[Row]) -> None:
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]] = [
            (
                EntityKeyProto(join_keys=[ENTITY_KEY], entity_values=[ValueProto(int64_val=user)]),
                {name: _value(aggs[name], kind) for name, kind in self.kinds.items()},
                _EPOCH + timedelta(microseconds=version_us),
                None,
            )
            for user, version_us, aggs in rows
        ]
        if data:
            self.provider.online_write_batch(self.store.config, self.view, data, None)
