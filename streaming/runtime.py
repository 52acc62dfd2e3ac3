"""Per-process resources of the dataflow, built on first use (never at import time).

Bytewax workers of one process are threads; they share one store client, one
profile cache and one predictor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from core.predictor import Predictor
from core.settings import Settings
from core.store import feature_service, open_store
from streaming.features import ProfileCache, feast_fetch, feature_columns, profile_refs
from streaming.metrics import StreamMetrics
from streaming.online import OnlineWriter, latest_per_user
from streaming.records import DeadLetter, Enriched, Event, Update


@dataclass(frozen=True)
class Score:
    transaction_id: str
    user_id: int
    score: float
    model_version: str
    event_timestamp: str
    latency_ms: float  # from the event entering Kafka (or being read, in replay) to its score

    def to_json(self) -> str:
        return (
            f'{{"transaction_id":"{self.transaction_id}","user_id":{self.user_id},'
            f'"score":{self.score!r},"model_version":"{self.model_version}",'
            f'"event_timestamp":"{self.event_timestamp}","latency_ms":{self.latency_ms:.1f}}}'
        )


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        store = open_store(settings)
        service = feature_service(store)
        self.predictor = Predictor.load(settings.model_path, service)
        self.profiles = ProfileCache(
            profile_refs(store, service), feast_fetch(store), settings.stream_profile_cache_s
        )
        self.writer = OnlineWriter(store)
        self.metrics = StreamMetrics(settings.stream_log_interval_s, settings.stream_metrics_file)
        self._lock = threading.Lock()

    def enrich(self, events: Sequence[Event]) -> list[Enriched | DeadLetter]:
        """Attach profiles; route unknown entities by the configured policy."""
        self.metrics.add("events_in", len(events))
        with self._lock:
            looked_up = self.profiles.lookup(events)
        out: list[Enriched | DeadLetter] = []
        for event, (profile, unknown) in zip(events, looked_up, strict=True):
            if unknown and self.settings.stream_unknown_entity == "dead_letter":
                out.append(DeadLetter(event.raw, "unknown_entity", f"no profile for {unknown}"))
            else:
                out.append(Enriched(event, profile))
        return out

    def score(self, updates: Sequence[Update]) -> list[Score]:
        began = time.perf_counter()
        columns = feature_columns(updates, self.predictor.features)
        scores = self.predictor.predict(columns)
        now_ms = time.time() * 1000
        out = [
            Score(
                u.enriched.event.txn.transaction_id,
                u.enriched.event.txn.user_id,
                float(s),
                self.predictor.version,
                u.enriched.event.txn.event_timestamp.isoformat(),
                now_ms - u.enriched.event.raw.ingest_ms,
            )
            for u, s in zip(updates, scores, strict=True)
        ]
        self.metrics.add("scored", len(out))
        self.metrics.last["lag_ms"] = out[-1].latency_ms if out else 0.0
        self.metrics.observe("score_ms", (time.perf_counter() - began) * 1000)
        return out

    def write(self, updates: Sequence[Update]) -> None:
        began = time.perf_counter()
        rows = latest_per_user(updates)
        self.writer.write(rows)
        self.metrics.add("online_rows", len(rows))
        self.metrics.observe("write_ms", (time.perf_counter() - began) * 1000)

    def dead(self, letters: Sequence[DeadLetter]) -> None:
        for d in letters:
            self.metrics.add(f"dead_letters_{d.reason}")


_lock = threading.Lock()
_runtimes: dict[str, Runtime] = {}


def get_runtime(settings: Settings) -> Runtime:
    key = settings.model_dump_json()
    with _lock:
        if key not in _runtimes:
            _runtimes[key] = Runtime(settings)
        return _runtimes[key]
