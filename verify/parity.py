"""``python -m verify.parity``: one score everywhere, measured on the same transactions.

Each sampled transaction is scored four ways: the batch job (features as of the event),
the streaming dataflow (the events replayed through Kafka), the online API (called for
each event right after the stream applied it) and the shared predictor on a brute-force
point-in-time join (the reference). Per mode it reports the share of feature vectors
equal to the reference, the largest score difference, and for every mismatch the
features that differ and why. Equal vectors must score within 1e-9; an unexplained
mismatch fails. See ``verify.parity_workspace`` for how the inputs are lined up.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from core.aggregations import FEATURE_NAMES
from core.cli import Parser, UserError, run_cli
from core.contract import WINDOWS_VIEW
from core.models import pin_models
from core.plan import plan_service
from core.predictor import Predictor
from core.settings import Settings, get_settings
from core.store import feature_service, open_store
from datagen.generate import GeneratorConfig, generate
from harness.models import champion_dir_or_exit
from harness.reference import Reference, reference
from harness.report import RESULTS_DIR, Check, table, write_json
from verify.parity_batch import batch_mode
from verify.parity_compare import Verdict, compare, frame_rows, scored_verdicts
from verify.parity_online import PARTITIONS, OnlineRun, online_modes
from verify.parity_workspace import ParityWorkspace, build

PORTS = range(18200, 18220)  # this proof's serving ports


@dataclass(frozen=True)
class Budget:
    source: Path  # a datagen data directory
    model_dir: Path
    redis_url: str
    root: Path
    users: int | None = None  # only users with smaller ids (None: all)
    span: timedelta = timedelta(hours=20)
    late_snapshot: bool = False  # serve the day-end profiles online (a known mismatch class)


@dataclass
class Outcome:
    checks: list[Check]
    details: dict[str, Any]


def run(budget: Budget) -> list[Check]:
    return measure(budget).checks


def measure(budget: Budget) -> Outcome:
    now = datetime.now(timezone.utc)
    clock = _Clock()
    b = budget
    ws = build(b.source, b.model_dir, b.root, b.redis_url, now, b.span, b.users, b.late_snapshot)
    clock.lap("workspace (data, feast apply, materialize)")
    store = open_store(ws.settings)
    service = feature_service(store)
    predictor = pin_models(ws.settings, service).champion  # its MODEL_DIR: the copy
    features = predictor.features
    ref = reference(store, service, ws.history, ws.sample, features)
    ref_scored = predictor.score(ref.vectors)
    ref_scores = dict(zip(ref.vectors.index, ref_scored.scores, strict=True))
    ref_verdicts = scored_verdicts(ref.vectors.index, ref_scored)
    clock.lap("reference join")

    batch_vectors, batch_rows = batch_mode(ws, store, service, features, budget.root)
    batch_scores = batch_rows["score"]
    clock.lap("batch job")
    online = online_modes(ws, store, service, features, budget.root, _free_port())
    clock.lap("stream and API")

    ties = _ties(ws.history)
    views_of = _views_of(store, service)
    batch = compare(
        "batch",
        frame_rows(batch_vectors),
        {str(k): float(v) for k, v in batch_scores.items()},
        ref.vectors,
        ref_scores,
        lambda tx, f: _tie(tx, f, ties),
        {str(tx): Verdict.of(r.decision, r.reasons) for tx, r in batch_rows.iterrows()},
        ref_verdicts,
    )
    stream = compare(
        "stream",
        online.stream_vectors,
        online.stream_scores,
        ref.vectors,
        ref_scores,
        lambda tx, f: _tie(tx, f, ties) or _snapshot(tx, f, ws, ref, views_of),
        online.stream_verdicts,
        ref_verdicts,
    )
    api = compare(
        "online API",
        {tx: r["features"] for tx, r in online.api.items()},
        {tx: r["score"] for tx, r in online.api.items()},
        ref.vectors,
        ref_scores,
        lambda tx, f: (
            _tie(tx, f, ties) or _stale(tx, f, online) or _snapshot(tx, f, ws, ref, views_of)
        ),
        {tx: Verdict.of(r["decision"], r["reasons"]) for tx, r in online.api.items()},
        ref_verdicts,
    )
    reports = [batch, stream, api]
    checks = [
        Check("sample", "transactions", str(len(ws.sample)), len(ws.sample) > 0),
        Check("sample", "users", str(ws.sample.user_id.nunique()), True),
        Check("sample", "dead-lettered by the stream", str(len(online.dead)), not online.dead),
        *_self_consistency(predictor, batch_vectors, batch_scores, online),
    ]
    for report in reports:
        checks += report.checks()
    details = {
        "conditions": _conditions(ws, budget, online, predictor, now),
        "seconds": clock.laps,
        "modes": [r.to_json() for r in reports],
    }
    return Outcome(checks, details)


class _Clock:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 1)
        self._last = now


def _self_consistency(
    predictor: Predictor, batch_vectors: pd.DataFrame, batch_scores: pd.Series, online: OnlineRun
) -> list[Check]:
    """The vectors reported for batch and stream are the ones those modes scored."""
    rescored = predictor.predict(batch_vectors)
    batch_gap = float(abs(rescored - batch_scores.reindex(batch_vectors.index).to_numpy()).max())
    ids = list(online.stream_vectors)
    columns = {f: [online.stream_vectors[i][f] for i in ids] for f in predictor.features}
    stream_gap = float(
        abs(predictor.predict(columns) - [online.stream_scores[i] for i in ids]).max()
    )
    return [
        Check("batch", "job score - predictor(library vector)", f"{batch_gap:.3g}", not batch_gap),
        Check("stream", "its score - predictor(its vector)", f"{stream_gap:.3g}", not stream_gap),
    ]


def _ties(history: pd.DataFrame) -> set[str]:
    """Events sharing a user and a microsecond: their order, hence windows, is arbitrary."""
    dup = history.duplicated(["user_id", "event_timestamp"], keep=False)
    return set(history.transaction_id[dup])


def _tie(tx: str, feature: str, ties: set[str]) -> str | None:
    if tx in ties and feature in FEATURE_NAMES:
        return "tie: another event of the user at the same microsecond"
    return None


def _stale(tx: str, feature: str, online: OnlineRun) -> str | None:
    if feature in online.api[tx]["stale_features"]:
        return "stale: older than the view's max age at request time, defaulted"
    return None


def _snapshot(
    tx: str, feature: str, ws: ParityWorkspace, ref: Reference, views_of: dict[str, set[str]]
) -> str | None:
    """Online modes read the latest profile; the reference, the one in force at event time."""
    online_us = int(pd.Timestamp(ws.snapshot).value // 1000)
    for view in views_of.get(feature, set()):
        if ref.profile_ts[view].get(tx) != online_us:
            return f"profile: the online {view} snapshot is not the point-in-time one"
    return None


def _views_of(store: Any, service: Any) -> dict[str, set[str]]:
    """Each model feature's stored source views (on-demand features: their inputs' views)."""
    plan = plan_service(store, service)
    out = {feature: {view} for _, feature, view in plan.log_columns if view is not None}
    for read in plan.on_demand:
        out |= {feature: set(read.sources) for feature in read.outputs}
    return {feature: views - {WINDOWS_VIEW} for feature, views in out.items()}


def _conditions(
    ws: ParityWorkspace, budget: Budget, online: OnlineRun, predictor: Predictor, now: datetime
) -> dict[str, Any]:
    return {
        "run_at": now.isoformat(),
        "sample_transactions": len(ws.sample),
        "sample_users": int(ws.sample.user_id.nunique()),
        "sample_first": ws.sample.event_timestamp.min().isoformat(),
        "sample_last": ws.sample.event_timestamp.max().isoformat(),
        "online_profile_snapshot": ws.snapshot.isoformat(),
        "late_snapshot": budget.late_snapshot,
        "history_transactions": len(ws.history),
        "warmup_events": online.warmup_events,
        "rounds": online.rounds,
        "rounds_scored_before_online_write": online.score_before_online_write,
        "kafka_partitions": PARTITIONS,
        "model_version": predictor.version,
        "feast_project": ws.project,
        "source": str(budget.source),
    }


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise UserError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m verify.parity", description=__doc__)
    parser.add_argument("--txns-per-day", type=int, default=16_000, help="generated data's rate")
    parser.add_argument("--days", type=int, default=4, help="days of generated history")
    parser.add_argument("--users", type=int, help="only users with ids below this")
    parser.add_argument("--span-hours", type=float, default=20.0, help="sampled hours (<= 24)")
    parser.add_argument(
        "--late-snapshot",
        action="store_true",
        help="serve the profile snapshot taken at the sample's end online, as if the daily"
        " profile job had run (the online modes' profiles then differ, and are explained)",
    )
    return parser


def _main(args: argparse.Namespace) -> int:
    settings: Settings = get_settings()
    root = RESULTS_DIR / "parity-workspace"  # kept for its logs (api.log, stream.log)
    shutil.rmtree(root, ignore_errors=True)
    print(f"generating data in {root} ...", flush=True)
    generate(GeneratorConfig(days=args.days, txns_per_day=args.txns_per_day), root / "source")
    budget = Budget(
        root / "source",
        champion_dir_or_exit(settings),
        settings.redis_connection_string,
        root,
        args.users,
        timedelta(hours=args.span_hours),
        args.late_snapshot,
    )
    outcome = measure(budget)
    print(table(outcome.checks))
    path = write_json("parity", outcome.checks, outcome.details)
    print(f"details in {path.relative_to(RESULTS_DIR.parent.parent)}")
    return 0 if all(c.ok for c in outcome.checks) else 1


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
