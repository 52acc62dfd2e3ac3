"""Periodic structured log lines and a Prometheus textfile with the same figures.

One instance per process; counters are cumulative, the rate is over the last interval.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

log = logging.getLogger("streaming.metrics")


class StreamMetrics:
    def __init__(self, interval_s: float, textfile: Path | None) -> None:
        self.interval_s = interval_s
        self.textfile = textfile
        self.counts: Counter[str] = Counter()
        self.last: dict[str, float] = {"lag_ms": 0.0, "write_ms": 0.0, "score_ms": 0.0}
        self._lock = threading.Lock()
        self._since = time.monotonic()
        self._since_events = 0

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def observe(self, name: str, value: float) -> None:
        self.last[name] = value
        self.maybe_report()

    def snapshot(self) -> dict[str, float]:
        now = time.monotonic()
        with self._lock:
            events = self.counts["events_in"]
            rate = (events - self._since_events) / max(now - self._since, 1e-9)
            self._since, self._since_events = now, events
            return {"events_per_s": round(rate, 1), **self.counts, **self.last}

    def maybe_report(self) -> None:
        if time.monotonic() - self._since < self.interval_s:
            return
        figures = self.snapshot()
        log.info("stream %s", json.dumps(figures, sort_keys=True))
        if self.textfile is not None:
            registry = CollectorRegistry()
            for name, value in figures.items():
                Gauge(f"fraud_stream_{name}", name, registry=registry).set(value)
            write_to_textfile(str(self.textfile), registry)
