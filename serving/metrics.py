"""Prometheus metrics; multi-process aware, since uvicorn runs one worker per core.

``python -m serving`` points PROMETHEUS_MULTIPROC_DIR at a fresh directory before the
workers start, so each worker writes its samples to shared files and /metrics aggregates
them all, and nothing else's.

Besides the request metrics, /metrics derives at scrape time:
- each feature view's age (now minus the newest event timestamp read from it), beside its
  maximum age, so an alert can fire before a view passes its TTL;
- the last nightly batch run, read from the newest ``date=*/_manifest.json`` under the
  scores root (rows, duration, missing features, score histogram): the API is the exporter
  of the job's own record, so a job that never ran shows as absent or old, not as zero.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from core.predictor import DECISIONS, Scored, Shadowed
from serving.online import OnlineRead

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
AGE_BUCKETS = (1, 10, 60, 600, 3600, 6 * 3600, 86400, 2 * 86400, 7 * 86400)


class Metrics:
    """The service's metrics, registered on a registry of their own (one per app).

    ``batch_scores``: the nightly job's scores root, whose newest manifest /metrics exports.
    """

    def __init__(self, batch_scores: Path | None = None) -> None:
        self.batch_scores = batch_scores
        self._newest: dict[str, float] = {}
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
            "Predicted fraud probability by model version and role (champion, challenger)",
            ["model_version", "role"],
            buckets=tuple(i / 20 for i in range(1, 21)),
            registry=r,
        )
        self.decisions = Counter(
            "serving_decisions",
            "Decisions returned, by the champion's version",
            ["model_version", "decision"],
            registry=r,
        )
        self.agreement = Counter(
            "serving_shadow_agreement",
            "Records whose challenger decision equals (agree) or differs from the champion's",
            ["champion_version", "challenger_version", "outcome"],
            registry=r,
        )
        self._add_feature_metrics(r)
        self.errors = Counter("serving_errors", "Error responses by kind", ["kind"], registry=r)
        self.extra_fields = Counter(
            "serving_extra_fields",
            "Request fields the schema does not know, ignored (SERVING_EXTRA_FIELDS=ignore)",
            registry=r,
        )
        self.reloads = Counter(
            "serving_model_reloads", "Model reloads by outcome", ["outcome"], registry=r
        )

    def _add_feature_metrics(self, r: CollectorRegistry) -> None:
        """Feature freshness and completeness, per view and per feature."""
        self.feature_age = Histogram(
            "serving_feature_age_seconds",
            "Age of online feature values at read time (per request: the oldest of each view)",
            ["feature_view"],
            buckets=AGE_BUCKETS,
            registry=r,
        )
        self.view_newest = Gauge(
            "serving_feature_view_newest_timestamp_seconds",
            "Newest event timestamp read from each view (its age is derived at scrape time)",
            ["feature_view"],
            multiprocess_mode="max",
            registry=r,
        )
        self.view_max_age = Gauge(
            "serving_feature_view_max_age_seconds",
            "Each view's maximum age (SERVING_MAX_AGE_SECONDS or its TTL): older reads as missing",
            ["feature_view"],
            multiprocess_mode="max",
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

    def set_max_ages(self, max_age_s: dict[str, float]) -> None:
        for view, seconds in max_age_s.items():
            self.view_max_age.labels(view).set(seconds)

    def exposition(self) -> tuple[bytes, str]:
        base = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            base = CollectorRegistry()
            multiprocess.MultiProcessCollector(base)
        families = list(base.collect())
        families += view_ages(families, time.time())
        if self.batch_scores is not None:
            families += batch_run(latest_manifest(self.batch_scores))
        return generate_latest(_Families(families)), CONTENT_TYPE_LATEST

    def observe(self, champion: Scored, read: OnlineRead, now: float) -> None:
        """Record a request's scores, decisions and feature reads, one update per series: each
        costs a lock and a pid check (docs/performance.md, "Serving: metrics updates")."""
        score = self.score.labels(champion.version, "champion")
        for value in champion.scores.tolist():
            score.observe(value)
        for code, count in enumerate(np.bincount(champion.codes, minlength=len(DECISIONS))):
            if count:
                self.decisions.labels(champion.version, DECISIONS[code]).inc(int(count))
        for view, stamps in read.timestamps.items():
            known = [t for t in stamps if t is not None]
            if not known:
                continue
            self.feature_age.labels(view).observe(now - min(known))  # the oldest read
            newest = max(known)
            if newest > self._newest.get(view, 0.0):  # only a newer value moves the gauge
                self._newest[view] = newest
                self.view_newest.labels(view).set(newest)
        stale = Tally(name for names in read.stale for name in names)
        for name, count in stale.items():
            self.stale.labels(name).inc(count)
        for name in champion.features:  # stale values read as None too: not missing
            missing = read.columns[name].count(None) - stale[name]
            if missing:
                self.missing.labels(name).inc(missing)

    def observe_shadow(self, scored: Shadowed) -> None:
        """The challenger's score distribution, and how often its decision is the champion's."""
        shadow = scored.challenger
        if shadow is None:
            return
        score = self.score.labels(shadow.version, "challenger")
        for value in shadow.scores.tolist():
            score.observe(value)
        versions = (scored.champion.version, shadow.version)
        for outcome, count in scored.agreement().items():
            if count:
                self.agreement.labels(*versions, outcome).inc(count)


class _Families(Collector):
    """Already collected families, for ``generate_latest``."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def view_ages(families: Iterable[Metric], now: float) -> Iterator[Metric]:
    """``serving_feature_view_age_seconds``: now minus each view's newest timestamp read."""
    ages = GaugeMetricFamily(
        "serving_feature_view_age_seconds",
        "Age of the newest value read from each view; alert before it reaches the max age",
        labels=["feature_view"],
    )
    for family in families:
        if family.name == "serving_feature_view_newest_timestamp_seconds":
            for sample in family.samples:
                ages.add_metric([sample.labels["feature_view"]], max(0.0, now - sample.value))
    yield ages


def latest_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of the newest complete ``date=YYYY-MM-DD`` partition, if any."""
    for partition in sorted(root.glob("date=*"), reverse=True):
        try:
            manifest: dict[str, Any] = json.loads((partition / "_manifest.json").read_text())
        except (OSError, ValueError):
            continue  # being written, or not a partition
        if manifest.get("status") == "complete":
            return manifest
    return None


def batch_run(m: dict[str, Any] | None) -> Iterator[Metric]:
    """The last nightly run as gauges, and its score histogram as a histogram."""
    if m is None:
        return
    info = GaugeMetricFamily(
        "batch_last_run_info",
        "The newest scored date's run",
        labels=["date", "model_version", "run_id"],
    )
    info.add_metric([m["date"], m["model_version"], m["run_id"]], 1)
    rows = GaugeMetricFamily("batch_last_run_rows", "Rows of the last run", labels=["kind"])
    for kind in ("in", "out", "missing_features"):
        rows.add_metric([kind], m[f"rows_{kind}"])
    missing = GaugeMetricFamily(
        "batch_last_run_missing_features", "Rows missing each feature", labels=["feature"]
    )
    for feature, count in m.get("missing_by_feature", {}).items():
        missing.add_metric([feature], count)
    duration = GaugeMetricFamily("batch_last_run_duration_seconds", "Duration of the last run")
    duration.add_metric([], m["duration_s"])
    scored = GaugeMetricFamily("batch_last_run_timestamp_seconds", "When the last run scored")
    scored.add_metric([], _epoch(m["scored_at"]))
    yield from (info, rows, missing, duration, scored, _batch_scores(m))


def _batch_scores(m: dict[str, Any]) -> Metric:
    family = HistogramMetricFamily(
        "batch_prediction_score", "Predicted fraud probability, last run", labels=["model_version"]
    )
    hist = m["score_histogram"]
    total, buckets = 0, []
    for edge, count in zip(hist["edges"][1:], hist["counts"], strict=True):
        total += count
        buckets.append((str(float(edge)) if edge < 1 else "+Inf", total))
    family.add_metric([m["model_version"]], buckets, sum_value=None)
    return family


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
