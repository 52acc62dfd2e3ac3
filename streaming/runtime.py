"""Per-process resources of the dataflow, built on first use (never at import time).

Bytewax workers of one process are threads; they share one store client, one
profile cache and one model watcher, which follows the registry's aliases in a thread of
its own (``core.model_follow``) and swaps between micro-batches.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence

from prometheus_client import REGISTRY

from core.model_follow import FollowMetrics, follow_forever
from core.models import ModelWatcher
from core.predictor import Models, Scored
from core.settings import Settings
from core.store import feature_service, open_store
from streaming.features import ProfileCache, feast_fetch, feature_columns, profile_refs
from streaming.metrics import process_metrics
from streaming.online import OnlineWriter, latest_per_user
from streaming.records import Chunk, DeadLetter, Enriched, Event, Raw, Stepped, parse
from streaming.windows import shard_of


def score_json(
    transaction_id: str,
    user_id: int,
    score: float,
    model_version: str,
    event_timestamp: str,
    latency_ms: float,
    decision: str,
    reasons: str,
    shadow: str = "",
) -> str:
    """The score message; ``latency_ms`` runs from the event entering Kafka (or being read,
    in replay) to its score. ``reasons`` is a JSON array (``reasons_json``), ``shadow`` the
    challenger's fields (``shadow_json``) or empty."""
    return (
        f'{{"transaction_id":{json.dumps(transaction_id)},"user_id":{user_id},'
        f'"score":{score!r},"model_version":{json.dumps(model_version)},'
        f'"event_timestamp":"{event_timestamp}","latency_ms":{latency_ms:.1f},'
        f'"decision":"{decision}","reasons":{reasons}{shadow}}}'
    )


def reasons_json(scored: Scored) -> list[str]:
    """Each row's reasons as a JSON array, contributions at full precision (as the score).

    One f-string per count of reasons (the used slots lead each row) rather than a join per
    reason: cheaper per event (``docs/performance.md``, "Decisions and reasons").
    """
    item = [f'{{"feature":{json.dumps(name)},"contribution":' for name in scored.features]
    counts = (scored.reason_index >= 0).sum(axis=1).tolist()
    rows = zip(scored.reason_index.tolist(), scored.reason_value.tolist(), counts, strict=True)
    out = []
    for (a, b, c), (x, y, z), k in rows:
        if k == 3:
            out.append(f"[{item[a]}{x!r}}},{item[b]}{y!r}}},{item[c]}{z!r}}}]")
        elif k == 2:
            out.append(f"[{item[a]}{x!r}}},{item[b]}{y!r}}}]")
        elif k == 1:
            out.append(f"[{item[a]}{x!r}}}]")
        else:
            out.append("[]")
    return out


def shadow_json(shadow: Scored | None, n: int) -> list[str]:
    """The challenger's fields of each score message; empty strings without a challenger."""
    if shadow is None:
        return [""] * n
    version = json.dumps(shadow.version)
    return [
        f',"challenger_version":{version},"challenger_score":{s!r},"challenger_decision":"{d}"'
        for s, d in zip(shadow.scores.tolist(), shadow.decisions, strict=True)
    ]


Score = tuple[str, str]  # transaction_id, score_json(...)


def tune_gc() -> None:
    """Freeze start-up objects and collect the young generation less often.

    The flow allocates a few records per event; with CPython's default threshold the
    collector ran every few hundred events and rescanned the long-lived window state
    (``docs/performance.md``, "Streaming flow").
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


class FlowRuntime:
    """The per-process resources the flow's steps share: profiles, predictor, writer, metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        store = open_store(settings)
        service = feature_service(store)
        # Followed off the scoring path; score() reads .current once per micro-batch.
        self.models = ModelWatcher(settings, service)
        self.profiles = ProfileCache(
            profile_refs(store, service), feast_fetch(store), settings.stream_profile_cache_s
        )
        self.writer = OnlineWriter(store)
        self.metrics = process_metrics(
            settings.stream_log_interval_s,
            settings.stream_metrics_host,
            settings.stream_metrics_port,
        )
        follow_forever(
            self.models,
            _follow_metrics(),
            settings.model_reload_interval_s,
            lambda models: self.metrics.model.info(_model_info(models, service.name)),
        )
        self._lock = threading.Lock()
        tune_gc()

    def ingest(self, raws: Iterable[Raw]) -> list[tuple[str, Chunk]]:
        """Parse, attach profiles and group by shard: one item per shard per micro-batch.

        Dead letters (bad_json, schema, unknown_entity) ride along in some shard's chunk,
        so every dead letter leaves through the window step's output.
        """
        events: list[Event] = []
        dead: list[DeadLetter] = []
        for raw in raws:
            parsed = parse(raw, self.settings.stream_extra_fields)
            if isinstance(parsed, Event):
                events.append(parsed)
            else:
                dead.append(parsed)
        self.metrics.events.inc(len(events) + len(dead))
        extra = sum(e.extra_fields for e in events)
        if extra:
            self.metrics.extra_fields.inc(extra)
        chunks: dict[str, Chunk] = {}
        if events:
            with self._lock:
                looked_up = self.profiles.lookup(events)
            drop = self.settings.stream_unknown_entity == "dead_letter"
            for event, (profile, unknown) in zip(events, looked_up, strict=True):
                if unknown and drop:
                    detail = f"no profile for {unknown}"
                    dead.append(DeadLetter(event.raw, "unknown_entity", detail))
                    continue
                shard = shard_of(event.txn.user_id)
                chunk = chunks.get(shard)
                if chunk is None:
                    chunk = chunks[shard] = Chunk()
                chunk.events.append(Enriched(event, profile))
        if dead:
            shard = next(iter(chunks), "0")
            chunks.setdefault(shard, Chunk()).dead.extend(dead)
        return list(chunks.items())

    def score(self, stepped: Sequence[Stepped]) -> list[Score]:
        events = [e for s in stepped for e in s.events]
        if not events:
            return []
        began = time.perf_counter()
        at_event = [a for s in stepped for a in s.at_event]
        columns = feature_columns(events, at_event)
        scored = self.models.current.score(columns)  # once per micro-batch: one version each
        champion, challenger = scored.champion, scored.challenger
        scores = champion.scores.tolist()
        now_ms = time.time() * 1000
        rows = zip(
            events,
            scores,
            champion.decisions,
            reasons_json(champion),
            shadow_json(challenger, len(events)),
            strict=True,
        )
        out = []
        for enriched, s, decision, reasons, shadow in rows:
            event = enriched.event
            txn = event.txn
            body = score_json(
                txn.transaction_id,
                txn.user_id,
                s,
                champion.version,
                txn.event_timestamp.isoformat(),
                now_ms - event.raw.ingest_ms,
                decision,
                reasons,
                shadow,
            )
            out.append((txn.transaction_id, body))
        m = self.metrics
        m.scores.inc(len(out))
        m.observe_scored(scored)
        m.event_to_score.observe_many([(now_ms - e.event.raw.ingest_ms) / 1000 for e in events])
        m.step_seconds.labels("score").observe(time.perf_counter() - began)
        m.maybe_report()
        return out

    def write(self, stepped: Sequence[Stepped]) -> None:
        began = time.perf_counter()
        rows = latest_per_user([r for s in stepped for r in s.rows])
        self.writer.write(rows)
        self.metrics.online_rows.inc(len(rows))
        self.metrics.step_seconds.labels("write").observe(time.perf_counter() - began)
        self.metrics.maybe_report()

    def dead(self, stepped: Sequence[Stepped]) -> list[DeadLetter]:
        letters = [d for s in stepped for d in s.dead]
        for reason, n in Counter(d.reason for d in letters).items():
            self.metrics.dead_letters.labels(reason).inc(n)
        return letters


def _model_info(models: Models, service: str) -> dict[str, str]:
    """The stream_model info: the versions scoring now."""
    info = {
        "version": models.champion.version,
        "checksum": models.champion.manifest.checksum,
        "feature_service": service,
    }
    if models.challenger is not None:
        info["challenger_version"] = models.challenger.version
    return info


_lock = threading.Lock()
_runtimes: dict[str, FlowRuntime] = {}
_follow: list[FollowMetrics] = []  # one per process: the metrics live on the default registry
_follow_lock = threading.Lock()


def _follow_metrics() -> FollowMetrics:
    with _follow_lock:  # not _lock: get_flow_runtime holds it while a runtime is built
        if not _follow:
            _follow.append(FollowMetrics("stream", REGISTRY))
        return _follow[0]


def get_flow_runtime(settings: Settings) -> FlowRuntime:
    key = settings.model_dump_json()
    with _lock:
        if key not in _runtimes:
            _runtimes[key] = FlowRuntime(settings)
        return _runtimes[key]
