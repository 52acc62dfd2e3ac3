"""The model's input vector for streamed events, assembled as the online SDK would give it.

Window features come from the stream's own fresh state; user and merchant profiles
are read through ``store.get_online_features`` (cached for a bounded age, since they
change daily); request features come from ``core.request_features.compute``, the
function the Feast on-demand view runs. So a streamed event and an online read of the
same record give the same vector, hence the same score.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from feast import FeatureService, FeatureStore, FeatureView, OnDemandFeatureView

from core.contract import REQUEST_FIELDS, WINDOWS_VIEW
from core.request_features import compute
from streaming.records import Event, Update


def profile_refs(store: FeatureStore, service: FeatureService) -> dict[str, list[str]]:
    """Stored features the service needs besides the stream's windows, by join key.

    Includes the inputs of on-demand views (``home_country`` feeds ``is_foreign``).
    """
    refs: dict[str, dict[str, None]] = defaultdict(dict)  # ordered set per join key
    views: dict[str, FeatureView] = {v.name: v for v in store.list_feature_views()}
    for projection in service.feature_view_projections:
        if projection.name == WINDOWS_VIEW:
            continue
        if projection.name in views:
            sources = [projection]
        else:
            odfv: OnDemandFeatureView = store.get_on_demand_feature_view(projection.name)
            sources = list(odfv.source_feature_view_projections.values())
        for source in sources:
            (key,) = views[source.name].join_keys
            for f in source.features:
                refs[key][f"{source.name}:{f.name}"] = None
    return {key: list(names) for key, names in refs.items()}


Fetch = Callable[[list[str], str, list[int]], list[dict[str, Any]]]


def feast_fetch(store: FeatureStore) -> Fetch:
    def fetch(refs: list[str], key: str, ids: list[int]) -> list[dict[str, Any]]:
        got = store.get_online_features(features=refs, entity_rows=[{key: i} for i in ids])
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
        self.cache: dict[str, dict[int, tuple[float, dict[str, Any]]]] = {k: {} for k in refs}
        self.fetches = 0

    def lookup(self, events: Sequence[Event]) -> list[tuple[dict[str, Any], list[str]]]:
        """Per event: the merged profile and the join keys with no stored profile."""
        now = self.clock()
        for key, refs in self.refs.items():
            cache = self.cache[key]
            wanted = {getattr(e.txn, key) for e in events}
            stale = [i for i in wanted if i not in cache or now - cache[i][0] > self.max_age_s]
            if stale:
                self.fetches += 1
                for i, row in zip(stale, self.fetch(refs, key, stale), strict=True):
                    cache[i] = (now, row)
        out = []
        for e in events:
            merged: dict[str, Any] = {}
            unknown = []
            for key in self.refs:
                row = self.cache[key][getattr(e.txn, key)][1]
                if all(v is None for v in row.values()):
                    unknown.append(key)
                merged.update(row)
            out.append((merged, unknown))
        return out


def feature_columns(updates: Sequence[Update], features: Sequence[str]) -> dict[str, list[Any]]:
    """Feast-style dict of lists, in the model's order, for a batch of updated events."""
    rows = [
        {
            **u.enriched.profile,
            **u.at_event,
            **{f: getattr(u.enriched.event.txn, f) for f in REQUEST_FIELDS},
        }
        for u in updates
    ]
    columns: dict[str, list[Any]] = {name: [r.get(name) for r in rows] for name in rows[0]}
    columns.update(compute(columns))
    return {name: columns[name] for name in features}
