"""The stream's Prometheus metrics, served over HTTP by prometheus_client, and a periodic
JSON status line with the same figures.

The conventions are the API's (``serving.metrics``): ``_total`` counters, ``_seconds``
histograms, labels rather than names for kinds. One set per process: Bytewax workers are
threads of one process. Process ``i`` of a Bytewax cluster (``-i``) serves
``STREAM_METRICS_PORT + i``, so every process is a scrape target of its own and nothing is
shared through files (a cluster's processes may run on different hosts). The registry is
prometheus_client's default one, because Bytewax's Kafka source registers its per-partition
``bytewax_kafka_consumer_lag`` gauge there.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import get_args

import numpy as np
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    start_http_server,
)
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from core.predictor import DECISIONS, Shadowed
from streaming.records import Reason

log = logging.getLogger("streaming.metrics")

REASONS: tuple[str, ...] = get_args(Reason)
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
SCORE_BUCKETS = tuple(i / 20 for i in range(1, 21))  # as serving_prediction_score


class BulkHistogram(Collector):
    """A histogram fed a micro-batch at a time, exposed as prometheus_client's own.

    ``Histogram.observe`` takes one value and a lock per call; per event, that is a share of
    the flow's CPU at tens of thousands of events/s. Here one numpy pass counts a batch.
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self._bounds = np.asarray(buckets, dtype=float)
        self._series: dict[tuple[str, ...], tuple[np.ndarray, list[float]]] = {}
        self._lock = threading.Lock()

    def observe_many(self, values: Sequence[float] | np.ndarray, *labels: str) -> None:
        v = np.asarray(values, dtype=float)
        if not v.size:
            return
        # le semantics: a value equal to a bound counts in that bound's bucket
        index = np.searchsorted(self._bounds, v, side="left")
        counts = np.bincount(index, minlength=len(self._bounds) + 1)
        with self._lock:
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = (np.zeros(len(self._bounds) + 1, np.int64), [0.0])
            series[0][:] += counts
            series[1][0] += float(v.sum())

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labels)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        with self._lock:
            series = [(k, np.cumsum(c), s[0]) for k, (c, s) in self._series.items()]
        les = [floatToGoString(b) for b in self._bounds] + ["+Inf"]
        for labels, cumulative, total in series:
            buckets = [(le, float(n)) for le, n in zip(les, cumulative, strict=True)]
            family.add_metric(list(labels), buckets, total)
        yield family


class StreamMetrics:
    """Counters, histograms and the model's info for one process, and its status line."""

    def __init__(self, interval_s: float, registry: CollectorRegistry = REGISTRY) -> None:
        r = registry
        self.events = Counter("stream_events", "Messages read, valid or not", registry=r)
        self.scores = Counter("stream_scores", "Events scored and sent on", registry=r)
        self.online_rows = Counter(
            "stream_online_rows",
            "Online-store rows written (latest per user per batch)",
            registry=r,
        )
        self.dead_letters = Counter(
            "stream_dead_letters", "Events sent to the dead-letter topic", ["reason"], registry=r
        )
        for reason in REASONS:  # every reason is a series from the start, so rate() sees 0
            self.dead_letters.labels(reason)
        self.extra_fields = Counter(
            "stream_extra_fields",
            "Event fields the schema does not know, ignored (STREAM_EXTRA_FIELDS=ignore)",
            registry=r,
        )
        self.step_seconds = Histogram(
            "stream_step_duration_seconds",
            "Time of one micro-batch in a step",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.event_to_score = BulkHistogram(
            "stream_event_to_score_seconds",
            "From an event entering Kafka (or being read, in replay) to its score",
            FRESHNESS_BUCKETS,
        )
        self.score = BulkHistogram(
            "stream_prediction_score",
            "Predicted fraud probability by model version and role (champion, challenger)",
            SCORE_BUCKETS,
            ["model_version", "role"],
        )
        self.decisions = Counter(
            "stream_decisions",
            "Decisions sent, by the champion's version",
            ["model_version", "decision"],
            registry=r,
        )
        self.agreement = Counter(
            "stream_shadow_agreement",
            "Events whose challenger decision equals (agree) or differs from the champion's",
            ["champion_version", "challenger_version", "outcome"],
            registry=r,
        )
        r.register(self.event_to_score)
        r.register(self.score)
        self.model = Info("stream_model", "The model the stream scores with", registry=r)
        self.interval_s = interval_s
        self._since = time.monotonic()
        self._since_events = 0.0
        self._report_lock = threading.Lock()

    def observe_scored(self, scored: Shadowed) -> None:
        """A micro-batch's score distributions, decisions, and the two models' agreement."""
        champion, shadow = scored.champion, scored.challenger
        self.score.observe_many(champion.scores, champion.version, "champion")
        counts = np.bincount(champion.codes, minlength=len(DECISIONS))
        for decision, count in zip(DECISIONS, counts.tolist(), strict=True):
            if count:
                self.decisions.labels(champion.version, decision).inc(count)
        if shadow is None:
            return
        self.score.observe_many(shadow.scores, shadow.version, "challenger")
        versions = (champion.version, shadow.version)
        for outcome, count in scored.agreement().items():
            if count:
                self.agreement.labels(*versions, outcome).inc(count)

    def status(self) -> dict[str, object]:
        """The status line's figures; the rate is over the time since the last call."""
        now = time.monotonic()
        events = _value(self.events)
        rate = (events - self._since_events) / max(now - self._since, 1e-9)
        self._since, self._since_events = now, events
        dead = {s.labels["reason"]: s.value for s in _samples(self.dead_letters) if s.value}
        return {
            "events_per_s": round(rate, 1),
            "events": events,
            "scores": _value(self.scores),
            "online_rows": _value(self.online_rows),
            "dead_letters": dead,
        }

    def maybe_report(self) -> None:
        if time.monotonic() - self._since < self.interval_s:
            return
        with self._report_lock:
            log.info("stream %s", json.dumps(self.status(), sort_keys=True))


def _samples(counter: Counter) -> list[Sample]:
    return [s for m in counter.collect() for s in m.samples if s.name.endswith("_total")]


def _value(counter: Counter) -> float:
    return sum(s.value for s in _samples(counter))


def process_id(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """This process's index in a Bytewax cluster, found as ``bytewax.run`` finds it:
    ``-i``/``--process-id``, then ``BYTEWAX_PROCESS_ID``, then the pod's ordinal; else 0."""
    for i, arg in enumerate(argv):
        if arg in ("-i", "--process-id") and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--process-id="):
            return int(arg.split("=", 1)[1])
        if arg.startswith("-i") and arg[2:].isdigit():
            return int(arg[2:])
    if env.get("BYTEWAX_PROCESS_ID"):
        return int(env["BYTEWAX_PROCESS_ID"])
    pod, statefulset = env.get("BYTEWAX_POD_NAME"), env.get("BYTEWAX_STATEFULSET_NAME")
    if pod and statefulset:
        return int(pod.replace(statefulset + "-", ""))
    return 0


def serve(host: str, port: int) -> int | None:
    """Serve the default registry at ``port`` plus this process's index; None if off (0).

    A port already taken is logged, not fatal: scoring goes on, and a deployment's
    healthcheck on the endpoint is what reports it.
    """
    if port == 0:
        return None
    port += process_id(sys.argv[1:], os.environ)
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("stream metrics not served on %s:%d: %s", host, port, exc)
        return None
    log.info("stream metrics on http://%s:%d/metrics", host, port)
    return port


_lock = threading.Lock()
_process: StreamMetrics | None = None


def process_metrics(interval_s: float, host: str, port: int) -> StreamMetrics:
    """This process's metrics, created and served on first use (never at import time)."""
    global _process
    with _lock:
        if _process is None:
            _process = StreamMetrics(interval_s)
            serve(host, port)
        return _process
