"""Streaming under faults: a Kafka broker restart, and the worker SIGKILLed three times.

    python -m verify.faults_stream [--budget EVENTS] [--seed N] [--redis-db N]

Both cases feed a paced stream of private events through the real dataflow process
(``fraud-stream`` with recovery on) and then compare what came out with what went in:
every produced event scored at least once (replays after a resume carry the same score),
no dead letters, and the window aggregates in Redis equal to the offline backfill of the
same events. The broker case runs a private broker (``devservices.PrivateKafka``, port
19092 by default) whose data survives the restart; the shared broker is never touched.
The kill case runs on the shared broker with topics of its own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from core.settings import Settings
from core.store import open_store
from harness.flow import flow_env, interrupt, launch_flow
from harness.kafka import PacedProducer, ScoreWatcher
from harness.models import champion_dir_or_exit
from harness.report import RESULTS_DIR, Check, table, write_json
from harness.servers import PrivateKafka
from harness.stream import fresh_topics, outcome_checks, private_events
from harness.workspace import own_db

HOLD = 0.9  # the last 10% of events wait until the fault is over, so it lands mid-stream
WAIT_S = 180.0  # bound on any one wait for the flow


def broker_restart(
    settings: Settings,
    workdir: Path,
    budget: int = 1500,
    seconds: float = 10.0,
    outage_s: float = 4.0,
    seed: int = 6,
    port: int = 19092,
    kill: bool = False,
) -> list[Check]:
    """Stop the broker (SIGTERM, or SIGKILL with ``kill``) once a seeded 25-50% of the
    events are scored, keep it down ``outage_s`` while the producer keeps sending, start it
    again over the same data, and let the same flow process finish the stream."""
    case = f"kafka broker {'SIGKILL' if kill else 'stop'} + restart"
    events = private_events(settings, budget, seed)
    n = len(events)
    stop_at = int(np.random.default_rng(seed).uniform(0.25, 0.5) * n)
    with PrivateKafka(settings, port, workdir / "kafka") as broker:
        topics = fresh_topics(broker.bootstrap)
        watcher = ScoreWatcher(broker.bootstrap, topics.scores)
        producer = PacedProducer(broker.bootstrap, topics.transactions, events, seconds)
        # The private broker speaks PLAINTEXT whatever the shared one asks for.
        env = flow_env(settings, broker.bootstrap, topics) | {
            "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"
        }
        flow = launch_flow(env, workdir / "recovery", workdir / "flow.log", tail=True)
        pid = flow.pid
        try:
            watcher.start()
            producer.start()
            producer.allow(1)  # its score says the flow is up; pace the stream from then
            watcher.wait_for(1, flow, WAIT_S)
            producer.allow(int(HOLD * n))
            landed = watcher.wait_for(stop_at, flow, WAIT_S)
            scored_at_stop = watcher.distinct
            broker.stop(kill=kill)
            sent_at_stop = producer.sent
            # A slow flow may reach stop_at after the producer used its allowance: release
            # more, so events are still sent into the outage however the two raced.
            producer.allow(max(int(HOLD * n), sent_at_stop + n // 20))
            time.sleep(outage_s)
            sent_while_down = producer.sent - sent_at_stop
            up_s = broker.start()
            back = time.monotonic()
            producer.allow(n)
            caught_up = watcher.wait_for(n, flow, WAIT_S)
            catch_up_s = time.monotonic() - back
            survived = flow.poll() is None
            producer.join(WAIT_S)
            checks = [
                Check(case, "broker stopped when",
                      f"{scored_at_stop} of {n} events scored (seed {seed})", landed),
                Check(case, "events sent while the broker was down",
                      f"{sent_while_down} in {outage_s:.0f} s", sent_while_down > 0),
                Check(case, "broker answering again after its start", f"{up_s:.1f} s", True),
                Check(case, "flow process survived (no restart)",
                      f"yes, pid {pid}" if survived else f"NO, exit {flow.returncode}; "
                      f"log {workdir / 'flow.log'}", survived),
                Check(case, "broker back to every event scored",
                      f"{catch_up_s:.1f} s" if caught_up else "NO", caught_up),
            ]  # fmt: skip
            return checks + outcome_checks(
                case, settings, broker.bootstrap, topics, events, producer
            )
        finally:
            producer.allow(n)
            watcher.stop()
            interrupt(flow)


def kill_points(n: int, kills: int, seed: int) -> list[int]:
    """One seeded point in each of ``kills`` equal slices of 10%..85% of the events, so
    every resumed run has work to do before the next kill."""
    edges = np.linspace(0.10, 0.85, kills + 1) * n
    draws = np.random.default_rng(seed).uniform(edges[:-1], edges[1:])
    return [int(x) for x in draws]


def worker_kills(
    settings: Settings,
    workdir: Path,
    budget: int = 2000,
    seconds: float = 10.0,
    kills: int = 3,
    seed: int = 6,
) -> list[Check]:
    """SIGKILL the flow at ``kills`` seeded points (distinct events scored), resuming it
    from its recovery snapshots each time; the last run drains the topic and exits."""
    case = f"stream worker SIGKILL x{kills} + resume"
    bootstrap = settings.kafka_bootstrap_servers
    events = private_events(settings, budget, seed)
    n = len(events)
    topics = fresh_topics(bootstrap)
    env = flow_env(settings, bootstrap, topics)
    recovery, log = workdir / "recovery", workdir / "flow.log"
    watcher = ScoreWatcher(bootstrap, topics.scores)
    producer = PacedProducer(bootstrap, topics.transactions, events, seconds)
    killed_at: list[int] = []
    up_s: list[float] = []
    flow: subprocess.Popen[bytes] | None = None
    try:
        watcher.start()
        producer.start()
        for point in kill_points(n, kills, seed):
            # The stream is held while the flow is down; one more event, scored with all
            # before it, says the (resumed) flow is up, and the pace restarts from there.
            began, probe = time.monotonic(), producer.sent + 1
            producer.allow(probe)
            flow = launch_flow(env, recovery, log, tail=True)
            if watcher.wait_for(probe, flow, WAIT_S):
                up_s.append(time.monotonic() - began)
            producer.allow(int(HOLD * n))
            landed = watcher.wait_for(point, flow, WAIT_S)
            producer.allow(producer.sent)
            os.kill(flow.pid, signal.SIGKILL)
            flow.wait()
            killed_at.append(watcher.distinct if landed else -1)
        producer.allow(n)
        producer.join(WAIT_S)
        flow = launch_flow(env, recovery, log, tail=False)
        try:
            code: int | None = flow.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            code = None
        points = ", ".join(str(k) for k in killed_at)
        starts = ", ".join(f"{s:.1f}" for s in up_s)
        checks = [
            Check(case, "killed at (distinct events scored)", f"{points} of {n} (seed {seed})",
                  len(killed_at) == kills and all(0 < k < n for k in killed_at)),
            Check(case, "launch to scoring (first run, then resumes)", f"{starts} s",
                  len(up_s) == kills),
            Check(case, "final resumed run drained and exited",
                  f"exit {code}" if code is not None else f"NO, still running; log {log}",
                  code == 0),
        ]  # fmt: skip
        return checks + outcome_checks(case, settings, bootstrap, topics, events, producer)
    finally:
        producer.allow(n)
        watcher.stop()
        if flow is not None:
            interrupt(flow)


def run(
    settings: Settings,
    workdir: Path,
    budget: int = 1500,
    seed: int = 6,
    seconds: float = 10.0,
    outage_s: float = 4.0,
    port: int = 19092,
) -> list[Check]:
    """Every case, ``budget`` events each: the broker stopped (SIGTERM) and, separately,
    SIGKILLed, then the worker SIGKILLed three times. ``settings`` name a feature repo with
    a trained model whose online store holds the merchant profiles (``load_merchants``)."""
    checks: list[Check] = []
    for kill in (False, True):
        name = "broker-kill" if kill else "broker-stop"
        checks += broker_restart(
            settings, workdir / name, budget, seconds, outage_s, seed, port, kill
        )
    return checks + worker_kills(settings, workdir / "worker-kills", budget, seconds, 3, seed)


def load_merchants(settings: Settings) -> None:
    """A fresh Redis database has no merchant profiles, which the flow reads; write the
    latest of each (the users' are written per run, under private ids)."""
    df = pd.read_parquet(settings.data_dir / "merchant_profile.parquet")
    df = df.sort_values("event_timestamp").groupby("merchant_id").tail(1)
    stamp = pd.Timestamp.now(tz="UTC") - pd.Timedelta(minutes=5)
    open_store(settings).write_to_online_store("merchant_profile", df.assign(event_timestamp=stamp))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verify.faults_stream", description=__doc__)
    parser.add_argument("--budget", type=int, default=10_000, help="events per case")
    parser.add_argument("--seconds", type=float, default=20.0, help="production time per case")
    parser.add_argument("--outage", type=float, default=10.0, help="seconds the broker is down")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--redis-db", type=int, default=12, help="the command's own database")
    parser.add_argument("--port", type=int, default=19092, help="private broker (+1: controller)")
    args = parser.parse_args(argv)
    base = Settings()
    settings = base.model_copy(update={"redis_connection_string": own_db(base, args.redis_db)})
    champion_dir_or_exit(settings)
    load_merchants(settings)
    workdir = RESULTS_DIR / "faults_stream-work"
    shutil.rmtree(workdir, ignore_errors=True)
    checks = run(settings, workdir, args.budget, args.seed, args.seconds, args.outage, args.port)
    print(table(checks))
    conditions = vars(args) | {"cores": os.cpu_count()}
    print(f"wrote {write_json('faults_stream', checks, {'conditions': conditions})}")
    if all(c.ok for c in checks):
        shutil.rmtree(workdir, ignore_errors=True)
        return 0
    print(f"flow and broker logs kept in {workdir}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
