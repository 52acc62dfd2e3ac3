"""`python -m verify.faults_redis_cluster`: a Redis Cluster master SIGKILLed under load.

    python -m verify.faults_redis_cluster [--rate 200] [--seconds 30] [--kill-at 10]

Runs on the local Redis Cluster devservices forms (127.0.0.1:7000-7005, cluster-node-timeout
from REDIS_CLUSTER_NODE_TIMEOUT_MS) with a workspace of the configured repo's data and model
materialized into it. Two cases, each killing a master that has a live replica, and
restarting the killed node afterwards (it rejoins as a replica):

- the API (`python -m serving`) under an open-loop load: no answer but 200 or 503, the
  longest answer, seconds from the kill and from the promotion to 200s again (the API is
  never restarted), and no 200 that differs from the answer before the kill;
- the stream (`fraud-stream`, recovery on) writing while the master dies: every event
  scored, the online aggregates equal the backfill, no event lost or counted twice.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

from core.settings import PROJECT_ROOT, Settings
from harness import redis_cluster as rc
from harness.flow import flow_env, interrupt, launch_flow
from harness.kafka import PacedProducer, ScoreWatcher
from harness.loadgen import Sample, open_loop, post
from harness.models import champion_dir_or_exit
from harness.report import RESULTS_DIR, Check, table, write_json
from harness.servers import PrivateRedis, free_port, launched, serving_command
from harness.stream import fresh_topics, outcome_checks, private_events
from harness.workspace import Workspace, create
from verify.faults_online import JSON, Answer, Online, _answers, sample_rows, view_limits

WAIT_S = 180.0  # bound on any one wait for the flow


def cluster_workspace(base: Settings, workdir: Path) -> Workspace:
    """``base``'s data, registry and model over the (flushed) cluster, the last 3 days
    materialized into it."""
    settings = rc.cluster_settings(base)
    rc.flush(settings)
    model = champion_dir_or_exit(base)
    url = settings.redis_connection_string
    ws = create(workdir, url, redis_type="redis_cluster", model_dir=model)
    shutil.copytree(base.data_dir, ws.settings.data_dir, dirs_exist_ok=True)
    now = datetime.now(timezone.utc)
    ws.materialize(now - timedelta(days=3), now)
    return ws


def _kill_later(settings: Settings, after_s: float, out: dict[str, float]) -> threading.Thread:
    """Kill a replicated master ``after_s`` from now; record the kill and promotion times."""

    def run() -> None:
        time.sleep(after_s)
        victim = rc.master_with_replica(settings)
        out["kill"] = time.perf_counter()
        rc.kill(victim)
        rc.wait_promoted(settings, victim)
        out["promoted"] = time.perf_counter()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def api_under_kill(
    ws: Workspace, rate: float = 200.0, seconds: float = 30.0, kill_at: float = 10.0
) -> list[Check]:
    case = f"redis cluster master SIGKILL at {kill_at:.0f} s, {rate:.0f} req/s for {seconds:.0f} s"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bodies = [json.dumps(r).encode() for r in sample_rows(max(64, int(rate * seconds / 4)))]
    env = ws.env  # its MODEL_DIR: the champion cluster_workspace pinned
    times: dict[str, float] = {}
    log = ws.settings.data_dir / "serve.log"
    max_age, view_of = view_limits(ws.settings)
    with launched(serving_command(port, 2), f"{url}/ready", log, env, PROJECT_ROOT, 180.0):
        requests = [post("/v1/predict", b) for b in bodies]
        # faults_online's judge: a 200 may differ from before only where a view aged out
        online = Online(url, port, PrivateRedis(0, log.parent), requests, _baseline(url, bodies),
                        max_age, view_of)  # fmt: skip
        killer = _kill_later(ws.settings, kill_at, times)
        samples = open_loop(port, requests, rate, seconds)
        killer.join()
    return _api_checks(case, samples, times) + _answers(case, online.judge(samples))


def _baseline(url: str, bodies: list[bytes]) -> list[Answer]:
    with httpx.Client(base_url=url, timeout=10) as client:
        answers = []
        for body in bodies:
            r = client.post("/v1/predict", content=body, headers=JSON)
            r.raise_for_status()
            answers.append(Answer.of(r.json(), time.perf_counter()))
    return answers


def _api_checks(case: str, samples: list[Sample], times: dict[str, float]) -> list[Check]:
    statuses = Counter(s.status for s in samples)
    other = sum(n for st, n in statuses.items() if st not in (200, 503))
    longest = max((s.latency - s.lag for s in samples), default=float("inf"))
    kill, promoted = times.get("kill", float("inf")), times.get("promoted", float("inf"))
    done = sorted((s.due + s.latency, s.status) for s in samples)
    first_ok = min((t for t, st in done if st == 200 and t > promoted), default=float("inf"))
    late = [t for t, st in done if st != 200 and t > promoted]
    last_bad = f"last at +{max(late) - promoted:.2f} s" if late else "none"
    counts = f"{len(samples)} ({statuses[200]} ok, {statuses[503]} 503, {other} other)"
    return [
        Check(case, "requests (200 / 503 / other)", counts, len(samples) > 0),
        Check(case, "responses other than 200/503", str(other), other == 0),
        Check(case, "longest answer, from written", f"{longest * 1000:.0f} ms", True),
        Check(case, "replica promoted after the kill", f"{promoted - kill:.2f} s",
              promoted < float("inf")),
        Check(case, "first 200 after the promotion (API not restarted)",
              f"+{first_ok - promoted:.2f} s ({first_ok - kill:.2f} s after the kill)",
              first_ok < float("inf")),
        Check(case, "503s after the promotion (a loaded box's timeouts)",
              f"{len(late)} ({last_bad})", True),
    ]  # fmt: skip


def stream_under_kill(
    ws: Workspace, bootstrap: str, budget: int = 3000, seconds: float = 20.0, seed: int = 6
) -> list[Check]:
    """The flow writes the windows to the cluster while a master dies at 25-50% scored."""
    case = f"redis cluster master SIGKILL mid-stream ({budget} events)"
    settings = ws.settings
    events = private_events(settings, budget, seed)
    n = len(events)
    topics = fresh_topics(bootstrap)
    watcher = ScoreWatcher(bootstrap, topics.scores)
    producer = PacedProducer(bootstrap, topics.transactions, events, seconds)
    env = flow_env(settings, bootstrap, topics) | {"MODEL_DIR": str(settings.model_dir)}
    workdir = settings.data_dir / "stream-kill"
    flow = launch_flow(env, workdir / "recovery", workdir / "flow.log", tail=True)
    pid = flow.pid
    try:
        watcher.start()
        producer.start()
        producer.allow(1)
        watcher.wait_for(1, flow, WAIT_S)
        producer.allow(n)
        landed = watcher.wait_for(n // 3, flow, WAIT_S)
        victim = rc.master_with_replica(settings)
        rc.kill(victim)
        promoted_s = rc.wait_promoted(settings, victim)
        caught_up = watcher.wait_for(n, flow, WAIT_S)
        survived = flow.poll() is None
        producer.join(WAIT_S)
        checks = [
            Check(case, "master killed when", f"{n // 3} of {n} scored", landed),
            Check(case, "replica promoted after the kill", f"{promoted_s:.2f} s", True),
            Check(case, "flow process survived (no restart)",
                  f"yes, pid {pid}" if survived else f"NO, exit {flow.returncode}", survived),
            Check(case, "every event scored after the promotion", "yes" if caught_up else "NO",
                  caught_up),
        ]  # fmt: skip
        return checks + outcome_checks(case, settings, bootstrap, topics, events, producer)
    finally:
        producer.allow(n)
        watcher.stop()
        interrupt(flow)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m verify.faults_redis_cluster", description=__doc__
    )
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s of the API load")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the API load")
    parser.add_argument("--kill-at", type=float, default=10.0, help="seconds into the load")
    parser.add_argument("--events", type=int, default=3000, help="events in the stream case")
    args = parser.parse_args(argv)
    base = Settings()
    workdir = RESULTS_DIR / "faults_redis_cluster-workspace"
    ws = cluster_workspace(base, workdir)
    checks = api_under_kill(ws, args.rate, args.seconds, args.kill_at)
    rc.revive(ws.settings)
    checks += stream_under_kill(ws, base.kafka_bootstrap_servers, args.events)
    rc.revive(ws.settings)
    print(table(checks))
    conditions = vars(args) | {
        "cores": os.cpu_count(),
        "cluster_node_timeout_ms": ws.settings.redis_cluster_node_timeout_ms,
    }
    print(f"wrote {write_json('faults_redis_cluster', checks, {'conditions': conditions})}")
    if all(c.ok for c in checks):
        shutil.rmtree(workdir, ignore_errors=True)
        return 0
    print(f"logs kept in {workdir}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
