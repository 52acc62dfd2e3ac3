"""``python -m verify.rollout``: promote a model version and roll it back while the API is
under load and the stream is consuming; how fast each mode follows, and what it cost.

Real processes throughout: ``python -m serving`` (two workers) and ``fraud-stream`` follow
the ``champion`` alias of a private MLflow registry (SQLite, under bench/results/), while an
open-loop load calls the API and a paced producer feeds the stream private events. Two
versions are registered: the current champion's artifact, and a variant of it whose
coefficients are scaled (so every score tells the two apart). A third of the way in, the
variant is promoted; two thirds in, rolled back. Then:

- ``api_switch_s`` / ``stream_switch_s``: from the promotion to the first answer or score
  naming the new version (and ``*_settled_s``: to the last one naming the old version);
  ``rollback_*`` the same for the rollback. Target: at most 5 s.
- ``failed_requests``: API answers other than 200. ``unscored_events``: produced events
  with no score. ``mixed_version_scores``: answers and scores that differ from the
  predictor of the version they name, on the same vector (the API's from ``explain=true``,
  the stream's rebuilt from the events, ``harness.rollout``). Target: 0 each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from core.cli import Parser, run_cli
from core.predictor import Predictor
from core.redis_url import with_db
from core.settings import PROJECT_ROOT, Settings, get_settings
from core.store import feature_service, open_store
from harness.flow import flow_env, interrupt, launch_flow
from harness.kafka import PacedProducer, ScoreWatcher, Topics, Worker, read_topic
from harness.loadgen import Sample, open_loop
from harness.models import registry_env
from harness.report import RESULTS_DIR, Check, table, write_json
from harness.rollout import Versions, api_requests, prepare, stream_vectors
from harness.servers import HOST, free_port, launched, serving_command
from harness.stream import fresh_topics, private_events
from registry.store import Registry
from verify.faults_stream import load_merchants

TARGET_S = 5.0
WAIT_S = 180.0  # bound on any one wait for the flow
TOLERANCE = 1e-9  # a score recomputed with its version's predictor, on the same vector


def mismatches(
    predictors: dict[str, Predictor], versions: Sequence[str], scores: Sequence[float],
    vectors: pd.DataFrame,
) -> int:  # fmt: skip
    """Scores that differ from their named version's predictor on the row's vector (an
    unknown version counts as one)."""
    wrong = 0
    rows: dict[str, list[int]] = defaultdict(list)
    for i, version in enumerate(versions):
        rows[version].append(i)
    for version, index in rows.items():
        predictor = predictors.get(version)
        if predictor is None:
            wrong += len(index)
            continue
        want = predictor.predict(vectors.iloc[index])
        got = np.asarray([scores[i] for i in index])
        wrong += int((np.abs(want - got) > TOLERANCE).sum())
    return wrong


@dataclass(frozen=True)
class Switch:
    """When answers moved to a version after an alias change at ``at``."""

    first_new_s: float | None  # first answer naming the new version (None: never)
    settled_s: float  # last answer naming another version (0: none after the change)


def switch(stamped: Sequence[tuple[float, str]], at: float, until: float, new: str) -> Switch:
    window = [(t - at, v) for t, v in stamped if at <= t < until]
    first = min((t for t, v in window if v == new), default=None)
    settled = max((t for t, v in window if v != new), default=0.0)
    return Switch(first, settled)


@dataclass
class Timeline:
    """The alias changes, on both clocks: perf_counter (the load's) and the wall (Kafka's)."""

    perf: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)

    def mark(self, change: Callable[[], object]) -> None:
        self.perf.append(time.perf_counter())
        self.wall.append(time.time())
        change()


@dataclass(frozen=True)
class Outcome:
    checks: list[Check]
    figures: dict[str, Any]


def api_outcome(samples: list[Sample], timeline: Timeline, v: Versions) -> dict[str, Any]:
    ok = [s for s in samples if s.status == 200]
    bodies = [json.loads(s.body) for s in ok]
    names = [str(b.get("model_version")) for b in bodies]
    vectors = pd.DataFrame([b["features"] for b in bodies], dtype=np.float64)
    stamped = [(s.due + s.latency, n) for s, n in zip(ok, names, strict=True)]
    (promoted, rolled_back), end = timeline.perf, float("inf")
    before = [n for t, n in stamped if t < promoted]
    return {
        "requests": len(samples),
        "failed": len(samples) - len(ok),
        "mixed": mismatches(v.predictors, names, [b["score"] for b in bodies], vectors),
        "before": before,
        "promote": switch(stamped, promoted, rolled_back, v.new),
        "rollback": switch(stamped, rolled_back, end, v.old),
    }


def stream_outcome(
    settings: Settings, bootstrap: str, topic: str, events: pd.DataFrame, timeline: Timeline,
    v: Versions,
) -> dict[str, Any]:  # fmt: skip
    messages = read_topic(bootstrap, topic)
    bodies = [json.loads(m.value() or b"{}") for m in messages]
    names = [str(b.get("model_version")) for b in bodies]
    stamped = [(m.timestamp()[1] / 1000, n) for m, n in zip(messages, names, strict=True)]
    store = open_store(settings)
    service = feature_service(store)
    features = v.predictors[v.old].features
    vectors = stream_vectors(store, service, events, features)
    ids = [b["transaction_id"] for b in bodies]
    known = [i for i, tx in enumerate(ids) if tx in vectors.index]
    (promoted, rolled_back), end = timeline.wall, float("inf")
    return {
        "messages": len(messages),
        "unscored": len(set(events.transaction_id) - set(ids)),
        "unknown": len(ids) - len(known),
        "mixed": mismatches(
            v.predictors,
            [names[i] for i in known],
            [bodies[i]["score"] for i in known],
            vectors.loc[[ids[i] for i in known]],
        ),
        "before": [n for t, n in stamped if t < promoted],
        "promote": switch(stamped, promoted, rolled_back, v.new),
        "rollback": switch(stamped, rolled_back, end, v.old),
    }


def _seconds(s: float | None) -> str:
    return "never" if s is None else f"{s:.2f} s"


def _switch_checks(mode: str, what: str, sw: Switch) -> list[Check]:
    case = f"{mode}: {what}"
    first_ok = sw.first_new_s is not None and sw.first_new_s <= TARGET_S
    return [
        Check(case, "first score with the new version", _seconds(sw.first_new_s), first_ok),
        Check(case, "last score with the old version", _seconds(sw.settled_s),
              sw.settled_s <= TARGET_S),
    ]  # fmt: skip


def summarize(api: dict[str, Any], stream: dict[str, Any], v: Versions) -> Outcome:
    """The checks and the figures rollout.json carries."""
    checks = []
    for mode, got in (("api", api), ("stream", stream)):
        before = got["before"]
        checks.append(
            Check(f"{mode}: before the promotion", f"scores naming {v.old}",
                  f"{sum(n == v.old for n in before)} of {len(before)}",
                  len(before) > 0 and all(n == v.old for n in before))
        )  # fmt: skip
        checks += _switch_checks(mode, f"promote {v.new}", got["promote"])
        checks += _switch_checks(mode, f"roll back to {v.old}", got["rollback"])
    checks += [
        Check("api", "failed requests", f"{api['failed']} of {api['requests']}",
              api["failed"] == 0 and api["requests"] > 0),
        Check("stream", "unscored events", str(stream["unscored"]), stream["unscored"] == 0),
        Check("stream", "scores of events not produced", str(stream["unknown"]),
              stream["unknown"] == 0),
        Check("api + stream", "scores unlike their version's predictor (mixed)",
              f"{api['mixed']} + {stream['mixed']}", api["mixed"] + stream["mixed"] == 0),
    ]  # fmt: skip
    figures = {
        "api_switch_s": api["promote"].first_new_s,
        "stream_switch_s": stream["promote"].first_new_s,
        "api_settled_s": api["promote"].settled_s,
        "stream_settled_s": stream["promote"].settled_s,
        "failed_requests": api["failed"],
        "unscored_events": stream["unscored"],
        "mixed_version_scores": api["mixed"] + stream["mixed"],
        "rollback_api_switch_s": api["rollback"].first_new_s,
        "rollback_stream_switch_s": stream["rollback"].first_new_s,
        "rollback_api_settled_s": api["rollback"].settled_s,
        "rollback_stream_settled_s": stream["rollback"].settled_s,
        "api_requests": api["requests"],
        "stream_score_messages": stream["messages"],
        "versions": [v.old, v.new],
    }
    return Outcome(checks, figures)


@dataclass(frozen=True)
class Load:
    """The sizes of one run."""

    events: int = 3000
    seconds: float = 30.0
    rate: float = 100.0  # API requests per second
    workers: int = 2  # API worker processes
    seed: int = 7


def run(settings: Settings, versions: Versions, workdir: Path, load: Load = Load()) -> Outcome:
    """The whole proof; ``settings`` follow a registry whose champion is ``versions.old``
    (``prepare``). Logs go to ``workdir``."""
    events = private_events(settings, load.events, load.seed)
    bootstrap = settings.kafka_bootstrap_servers
    topics = fresh_topics(bootstrap)
    env = flow_env(settings, bootstrap, topics) | registry_env(settings)
    env.pop("MODEL_DIR", None)
    port = free_port()
    url = f"http://{HOST}:{port}"
    # The stream starts while the API does: both load the registry's champion.
    flow = launch_flow(env, workdir / "recovery", workdir / "flow.log", tail=True)
    try:
        api_cmd = serving_command(port, load.workers)
        with launched(api_cmd, f"{url}/health", workdir / "api.log", env, PROJECT_ROOT):
            serving = httpx.get(f"{url}/ready", timeout=10).json().get("model_version")
            if serving != versions.old:
                raise RuntimeError(f"the API serves {serving}, not {versions.old}")
            got = _under_load(settings, workdir, flow, events, topics, port, load, versions)
    finally:
        interrupt(flow)
    timeline, samples = got
    api = api_outcome(samples, timeline, versions)
    stream = stream_outcome(settings, bootstrap, topics.scores, events, timeline, versions)
    return summarize(api, stream, versions)


def _under_load(
    settings: Settings, workdir: Path, flow: subprocess.Popen[bytes], events: pd.DataFrame,
    topics: Topics, port: int, load: Load, versions: Versions,
) -> tuple[Timeline, list[Sample]]:  # fmt: skip
    """Once the stream scores, load and production for ``load.seconds`` with the promotion
    at a third and the rollback at two thirds; returns once every event is scored."""
    bootstrap = settings.kafka_bootstrap_servers
    registry = Registry(settings)
    n = len(events)
    watcher = ScoreWatcher(bootstrap, topics.scores)
    producer = PacedProducer(bootstrap, topics.transactions, events, load.seconds)
    samples: list[Sample] = []
    requests = api_requests(events)
    api = Worker(lambda: samples.extend(open_loop(port, requests, load.rate, load.seconds)))
    timeline = Timeline()
    try:
        watcher.start()
        producer.start()
        producer.allow(1)
        if not watcher.wait_for(1, flow, WAIT_S):
            raise RuntimeError(f"the stream scored nothing; see {workdir / 'flow.log'}")
        began = time.monotonic()
        producer.allow(n)
        api.start()
        newest = versions.new.rpartition("/")[2]  # fraud-detector/2 -> 2
        time.sleep(max(0.0, began + load.seconds / 3 - time.monotonic()))
        timeline.mark(lambda: registry.set_champion(newest))
        time.sleep(max(0.0, began + 2 * load.seconds / 3 - time.monotonic()))
        timeline.mark(registry.rollback)
        api.join(load.seconds + 60)
        producer.join(WAIT_S)
        if not watcher.wait_for(n, flow, WAIT_S):
            raise RuntimeError(f"{n - watcher.distinct} events unscored; see {workdir}/flow.log")
        return timeline, samples
    finally:
        producer.allow(n)
        watcher.stop()


def build_parser() -> argparse.ArgumentParser:
    defaults = Load()
    parser = Parser(prog="python -m verify.rollout", description=__doc__)
    parser.add_argument("--events", type=int, default=defaults.events, help="streamed events")
    parser.add_argument("--seconds", type=float, default=defaults.seconds,
                        help="length of the load and the production (promotion at 1/3, "
                        "rollback at 2/3)")  # fmt: skip
    parser.add_argument("--rate", type=float, default=defaults.rate, help="API requests/s")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="API workers")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="event sample seed")
    parser.add_argument("--redis-db", type=int, default=14, help="the command's own database")
    return parser


def _main(args: argparse.Namespace) -> int:
    base = get_settings()
    redis = with_db(base.redis_connection_string, args.redis_db)
    settings = base.model_copy(update={"redis_connection_string": redis})
    load_merchants(settings)
    workdir = RESULTS_DIR / "rollout-work"
    load = Load(args.events, args.seconds, args.rate, args.workers, args.seed)
    outcome = run(*prepare(settings, workdir), workdir, load)
    print(table(outcome.checks))
    conditions = vars(args) | {
        "cores": os.cpu_count(),
        "model_reload_interval_s": settings.model_reload_interval_s,
    }
    extra = outcome.figures | {"conditions": conditions}
    print(json.dumps(outcome.figures, indent=2))
    print(f"wrote {write_json('rollout', outcome.checks, extra)}")
    if all(c.ok for c in outcome.checks):
        shutil.rmtree(workdir, ignore_errors=True)
        return 0
    print(f"logs kept in {workdir}")
    return 1


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
