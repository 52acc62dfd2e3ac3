"""The reference: a brute-force point-in-time join in plain Python, sharing no retrieval code.

For each event it scans the user's whole history for the window aggregates and every
snapshot row of each profile view for the one in force, straight from the documented
semantics: windows cover ``[t - window, t]`` with amounts summed in integer cents;
a view's row is the latest (by timestamp, then created timestamp) with
``t - ttl <= timestamp <= t``. Only the definitions (window specs, view TTLs and
sources from the registry, expanded by ``core.plan``) and the predictor are shared with
the modes under test. ``ProfileView.of_frame`` also serves tests that join one table.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import pandas as pd
from feast import FeatureService, FeatureStore, FeatureView, FileSource

from core.aggregations import SECS_SINCE_LAST, WINDOWS
from core.contract import WINDOWS_VIEW
from core.plan import plan_service

_US = 1_000_000


@dataclass(frozen=True)
class ProfileView:
    """One profile view's snapshot rows per entity, as (timestamp, created, values), sorted."""

    name: str
    key: str
    ttl_us: int | None
    features: tuple[str, ...]
    rows: dict[int, list[tuple[int, int, dict[str, Any]]]]

    @classmethod
    def load(cls, view: FeatureView, features: tuple[str, ...]) -> ProfileView:
        source = view.batch_source
        assert isinstance(source, FileSource), f"{view.name} must read a parquet file"
        (key,) = view.join_keys
        frame = pd.read_parquet(source.path)
        stamps = (source.timestamp_field, source.created_timestamp_column)
        return cls.of_frame(view.name, frame, key, stamps, view.ttl, features)

    @classmethod
    def of_frame(
        cls,
        name: str,
        frame: pd.DataFrame,
        key: str,
        stamps: tuple[str, str | None],
        ttl: timedelta | None,
        features: Sequence[str],
    ) -> ProfileView:
        """From a snapshot table; ``stamps``: its (timestamp, created timestamp) columns."""
        ts, created = stamps
        rows: dict[int, list[tuple[int, int, dict[str, Any]]]] = defaultdict(list)
        for rec in frame.to_dict("records"):
            stamp = _us(rec[ts])
            made = _us(rec[created]) if created else 0
            rows[int(rec[key])].append((stamp, made, {f: _plain(rec[f]) for f in features}))
        for entity_rows in rows.values():
            entity_rows.sort(key=lambda r: (r[0], r[1]))
        ttl_us = None if not ttl else int(ttl.total_seconds()) * _US
        return cls(name, key, ttl_us, tuple(features), dict(rows))

    def as_of_rows(self, entities: pd.DataFrame) -> pd.DataFrame:
        """The features in force at each entity row's ``event_timestamp``, in row order."""
        values = [
            self.as_of(int(k), _us(t))[1]
            for k, t in zip(entities[self.key], entities["event_timestamp"], strict=True)
        ]
        return pd.DataFrame(values, columns=list(self.features))

    def as_of(self, entity: int, t_us: int) -> tuple[int | None, dict[str, Any]]:
        """The row in force at ``t_us`` (its timestamp, or None when there is none)."""
        best: tuple[int, int, dict[str, Any]] | None = None
        for row in self.rows.get(entity, []):  # brute force: every row of the entity
            fresh = self.ttl_us is None or row[0] >= t_us - self.ttl_us
            if row[0] <= t_us and fresh and (best is None or row[:2] >= best[:2]):
                best = row
        if best is None:
            return None, dict.fromkeys(self.features)
        return best[0], best[2]


def profile_views(store: FeatureStore, service: FeatureService) -> list[ProfileView]:
    """Every stored view the service reads besides the windows, with the features the
    model and the on-demand view need from it."""
    plan = plan_service(store, service)
    return [ProfileView.load(r.view, r.features) for r in plan.stored if r.name != WINDOWS_VIEW]


def windows_at(history: list[tuple[int, float, int]], t_us: int) -> dict[str, Any]:
    """Every window aggregate of one user at time ``t_us``, scanning all its events."""
    out: dict[str, Any] = {}
    for spec in WINDOWS:
        lo = t_us - int(spec.window.total_seconds()) * _US
        inside = [(ts, amount, merchant) for ts, amount, merchant in history if lo <= ts <= t_us]
        if spec.op == "count":
            out[spec.name] = len(inside)
        elif spec.op == "sum":
            out[spec.name] = sum(round(amount * 100) for _, amount, _ in inside) / 100
        else:
            out[spec.name] = len({merchant for _, _, merchant in inside})
    earlier = [ts for ts, _, _ in history if ts < t_us]
    out[SECS_SINCE_LAST] = (t_us - max(earlier)) / _US if earlier else None
    return out


def request_features(row: dict[str, Any]) -> dict[str, Any]:
    """The on-demand features, from their documented meaning."""
    amount, avg, home = row["amount"], row["avg_amount_30d"], row["home_country"]
    return {
        "amount_log": math.log1p(amount),
        "amount_to_avg_30d": amount / avg if avg else None,
        "is_foreign": None if home is None else int(row["country"] != home),
        "is_online": int(row["channel"] == "online"),
    }


@dataclass(frozen=True)
class Reference:
    vectors: pd.DataFrame  # transaction_id index, the model's features
    profile_ts: dict[str, dict[str, int | None]]  # view -> transaction_id -> snapshot ts (us)


def reference(
    store: FeatureStore,
    service: FeatureService,
    history: pd.DataFrame,
    sample: pd.DataFrame,
    features: list[str],
) -> Reference:
    """The model's input vector of every sampled event, joined by brute force."""
    by_user: dict[int, list[tuple[int, float, int]]] = defaultdict(list)
    for ts, user, amount, merchant in zip(
        history.event_timestamp, history.user_id, history.amount, history.merchant_id, strict=True
    ):
        by_user[int(user)].append((_us(ts), float(amount), int(merchant)))
    views = profile_views(store, service)
    stamps: dict[str, dict[str, int | None]] = {v.name: {} for v in views}
    rows = []
    for event in cast(list[dict[str, Any]], sample.to_dict("records")):
        t_us = _us(event["event_timestamp"])
        row: dict[str, Any] = dict(event)
        for view in views:
            stamp, values = view.as_of(int(event[view.key]), t_us)
            stamps[view.name][event["transaction_id"]] = stamp
            row.update(values)
        row.update(windows_at(by_user[int(event["user_id"])], t_us))
        row.update(request_features(row))
        rows.append({"transaction_id": event["transaction_id"], **{f: row[f] for f in features}})
    vectors = pd.DataFrame(rows).set_index("transaction_id")
    return Reference(vectors, stamps)


def _us(ts: Any) -> int:
    return int(pd.Timestamp(ts).value // 1000)


def _plain(value: Any) -> Any:
    """Python scalars, with pandas' missing markers as None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value
