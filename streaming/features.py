"""The model's input vector for streamed events, assembled as the online SDK would give it.

Window features come from the stream's own fresh state; user and merchant profiles
are read through ``store.get_online_features`` (cached for a bounded age, since they
change daily); request features come from ``core.request_features.compute``, the
function the Feast on-demand view runs. So a streamed event and an online read of the
same record give the same vector, hence the same score.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from operator import attrgetter, itemgetter
from typing import Any

from feast import FeatureService, FeatureStore

from core.contract import REQUEST_FIELDS, WINDOWS_VIEW
from core.plan import plan_service
from core.redis_layout import FAILOVER_WAIT_S, until_reachable
from core.request_features import compute
from streaming.records import Aggregates, Enriched, Event


def profile_refs(store: FeatureStore, service: FeatureService) -> dict[str, list[str]]:
    """Stored features the service needs besides the stream's windows, by join key.

    Includes the inputs of on-demand views (``home_country`` feeds ``is_foreign``).
    """
    refs: dict[str, list[str]] = {}
    for read in plan_service(store, service).stored:
        if read.name != WINDOWS_VIEW:
            refs.setdefault(read.join_key, []).extend(f"{read.name}:{f}" for f in read.features)
    return refs


Fetch = Callable[[list[str], str, list[int]], list[dict[str, Any]]]


def feast_fetch(store: FeatureStore) -> Fetch:
    # On a Redis Cluster a failover makes the SDK's reads fail for a few seconds: wait it out
    # as the writer does (streaming.online), rather than crash the flow.
    cluster = getattr(store.config.online_store, "redis_type", None) == "redis_cluster"
    retry_s = FAILOVER_WAIT_S if cluster else 0.0

    def fetch(refs: list[str], key: str, ids: list[int]) -> list[dict[str, Any]]:
        rows = [{key: i} for i in ids]
        got = until_reachable(
            lambda: store.get_online_features(features=refs, entity_rows=rows), retry_s
        )
        cols = got.to_dict()
        names = [ref.split(":", 1)[1] for ref in refs]
        return [{n: cols[n][row] for n in names} for row in range(len(ids))]

    return fetch


class ProfileCache:
    """Per-entity profile rows, refetched in one batched online read once older than max age."""

    def __init__(
        self,
        refs: dict[str, list[str]],
        fetch: Fetch,
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.refs = refs
        self.fetch = fetch
        self.max_age_s = max_age_s
        self.clock = clock
        # join key -> entity -> (fetched at, row, whether anything is stored for it)
        self.cache: dict[str, dict[int, tuple[float, dict[str, Any], bool]]] = {k: {} for k in refs}
        self.fetches = 0

    def lookup(self, events: Sequence[Event]) -> list[tuple[tuple[dict[str, Any], ...], list[str]]]:
        """Per event: its profile row per join key, and the join keys with no stored profile."""
        now = self.clock()
        oldest = now - self.max_age_s
        columns = []
        for key, refs in self.refs.items():
            cache = self.cache[key]
            ids = [getattr(e.txn, key) for e in events]
            stale = [i for i in set(ids) if i not in cache or cache[i][0] < oldest]
            if stale:
                self.fetches += 1
                for i, row in zip(stale, self.fetch(refs, key, stale), strict=True):
                    cache[i] = (now, row, any(v is not None for v in row.values()))
            columns.append([cache[i] for i in ids])
        keys = list(self.refs)
        out = []
        for entries in zip(*columns, strict=True):
            unknown = [key for key, (_, _, known) in zip(keys, entries, strict=True) if not known]
            out.append((tuple(row for _, row, _ in entries), unknown))
        return out


def _columns(names: list[str], rows: list[Any], getter: Callable[..., Any]) -> dict[str, list[Any]]:
    """Columns ``names`` of ``rows``, transposed in C (``getter`` is item- or attrgetter)."""
    if not names:
        return {}
    get = getter(*names)
    values = map(get, rows) if len(names) > 1 else ((get(r),) for r in rows)
    return {
        name: list(column) for name, column in zip(names, zip(*values, strict=True), strict=True)
    }


def feature_columns(
    events: Sequence[Enriched], at_event: Sequence[Aggregates]
) -> dict[str, list[Any]]:
    """Feast-style dict of lists for a batch of updated events; the predictor picks by name.

    ``itemgetter`` + ``zip(*rows)`` transpose in C, as this runs for every event
    (figures: ``docs/performance.md``, "Streaming flow").
    """
    columns: dict[str, list[Any]] = {}
    for k, row in enumerate(events[0].profile):
        columns |= _columns(list(row), [e.profile[k] for e in events], itemgetter)
    columns |= _columns(list(at_event[0]), list(at_event), itemgetter)
    txns = [e.event.txn for e in events]
    columns |= _columns(list(REQUEST_FIELDS), txns, attrgetter)
    columns.update(compute(columns))
    return columns
