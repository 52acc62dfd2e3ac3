"""Prometheus metrics; multi-process aware, since uvicorn runs one worker per core.

``python -m serving`` points PROMETHEUS_MULTIPROC_DIR at a fresh directory before the
workers start, so each worker writes its samples to shared files and /metrics aggregates
them all, and nothing else's.
"""

from __future__ import annotations

import os
from collections import Counter as Tally
from collections.abc import Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from serving.schemas import PredictResult

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
AGE_BUCKETS = (1, 10, 60, 600, 3600, 6 * 3600, 86400, 2 * 86400, 7 * 86400)


class Metrics:
    """The service's metrics, registered on a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "serving_request_duration_seconds",
            "Request latency by endpoint",
            ["endpoint", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.score = Histogram(
            "serving_prediction_score",
            "Predicted fraud probability",
            buckets=tuple(i / 20 for i in range(1, 21)),
            registry=r,
        )
        self.feature_age = Histogram(
            "serving_feature_age_seconds",
            "Age of online feature values at read time (per request: the oldest of each view)",
            ["feature_view"],
            buckets=AGE_BUCKETS,
            registry=r,
        )
        self.missing = Counter(
            "serving_features_missing",
            "Features absent from the online store",
            ["feature"],
            registry=r,
        )
        self.stale = Counter(
            "serving_features_stale",
            "Features older than their maximum age",
            ["feature"],
            registry=r,
        )
        self.errors = Counter("serving_errors", "Error responses by kind", ["kind"], registry=r)
        self.reloads = Counter(
            "serving_model_reloads", "Model reloads by outcome", ["outcome"], registry=r
        )

    def exposition(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def observe(self, results: Sequence[PredictResult]) -> None:
        """Record a request's results, one update per series: each costs a lock and a pid check.

        Per record and feature, metrics were a quarter of a 100-record request's time
        (docs/performance.md, "Serving: metrics updates").
        """
        for r in results:
            self.score.observe(r.score)
        oldest: dict[str, float] = {}
        for r in results:
            for view, age in r.feature_age_seconds.items():
                if age is not None and age > oldest.get(view, -1.0):
                    oldest[view] = age
        for view, age in oldest.items():
            self.feature_age.labels(view).observe(age)
        for counter, names in (
            (self.missing, Tally(n for r in results for n in r.missing_features)),
            (self.stale, Tally(n for r in results for n in r.stale_features)),
        ):
            for name, count in names.items():
                counter.labels(name).inc(count)
