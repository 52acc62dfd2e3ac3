"""A FeatureService expanded into what every mode reads: one function, one typed plan.

Batch, streaming, the API, feature logging and the proofs all need the same answer:
which stored views the service reads (with the features the model and the on-demand
views need from each), which on-demand views it runs and on which request fields, and
the model's feature order. ``plan_service`` is the only place that walks the projections.
"""

from __future__ import annotations

from dataclasses import dataclass

from feast import FeatureService, FeatureStore, FeatureView, OnDemandFeatureView

from core.contract import feature_order


@dataclass(frozen=True)
class StoredRead:
    """One stored feature view and the features to read from it (model inputs and ODFV inputs)."""

    view: FeatureView
    features: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.view.name

    @property
    def join_key(self) -> str:
        (key,) = self.view.join_keys
        return key


@dataclass(frozen=True)
class OnDemandRead:
    """One on-demand view of the service and the outputs the model takes from it."""

    view: OnDemandFeatureView
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]  # the request fields and stored features its transform reads
    sources: tuple[str, ...]  # the stored views those features come from


@dataclass(frozen=True)
class ServicePlan:
    """Everything a FeatureService reads, in the order Feast resolves it."""

    service: FeatureService
    stored: tuple[StoredRead, ...]
    on_demand: tuple[OnDemandRead, ...]
    request_fields: tuple[str, ...]  # what the on-demand views read from the request
    order: tuple[str, ...]  # the model's input columns (``core.contract.feature_order``)
    log_columns: tuple[tuple[str, str, str | None], ...]  # (view to use, feature, stored view)

    def stored_view(self, name: str) -> StoredRead:
        (read,) = [r for r in self.stored if r.name == name]
        return read


def plan_service(store: FeatureStore, service: FeatureService) -> ServicePlan:
    """Expand ``service`` against ``store``'s registry into a ``ServicePlan``."""
    odfvs = {o.name: o for o in store.list_on_demand_feature_views()}
    wanted: dict[str, list[str]] = {}
    on_demand: list[OnDemandRead] = []
    request_fields: list[str] = []
    log_columns: list[tuple[str, str, str | None]] = []
    for projection in service.feature_view_projections:
        names = [f.name for f in projection.features]
        odfv = odfvs.get(projection.name)
        log_columns += [
            (projection.name_to_use(), n, None if odfv else projection.name) for n in names
        ]
        if odfv is None:
            _add(wanted, projection.name, names)
            continue
        fields = [f.name for r in odfv.source_request_sources.values() for f in r.schema]
        inputs = list(fields)
        for source in odfv.source_feature_view_projections.values():
            _add(wanted, source.name, [f.name for f in source.features])
            inputs += [f.name for f in source.features]
        sources = tuple(odfv.source_feature_view_projections)
        on_demand.append(OnDemandRead(odfv, tuple(names), tuple(inputs), sources))
        request_fields += [f for f in fields if f not in request_fields]
    stored = tuple(
        StoredRead(store.get_feature_view(name), tuple(features))
        for name, features in wanted.items()
    )
    order = tuple(feature_order(service))
    return ServicePlan(
        service, stored, tuple(on_demand), tuple(request_fields), order, tuple(log_columns)
    )


def _add(wanted: dict[str, list[str]], view: str, features: list[str]) -> None:
    have = wanted.setdefault(view, [])
    have += [f for f in features if f not in have]
