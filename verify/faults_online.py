"""`python -m verify.faults_online`: the online service under a Redis crash and under overload.

Real processes throughout: `python -m serving` under uvicorn, a private redis-server that
is SIGKILLed and restarted (the shared one is never touched), and an open-loop load on
loopback (verify.loadgen), bounded in time and count. Every answer is compared with the
score the same request got before the fault: a fault may cost answers, never change one.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from core.cli import Parser, UserError, run_cli
from core.redis_url import describe, sync_client
from core.settings import PROJECT_ROOT, Settings, get_settings
from serving.launch import free_port, launched, serving_command
from verify.loadgen import REFUSED, TIMED_OUT, Sample, closed_loop, open_loop, post
from verify.private_redis import PrivateRedis, copy_rows, private_redis
from verify.report import Check, table, write_json

COUNTRIES = ("GB", "US", "FR", "DE", "ES", "IT")
CHANNELS = ("online", "pos", "atm")
JSON = {"Content-Type": "application/json"}


def sample_rows(n: int) -> list[dict[str, object]]:
    """``n`` distinct, deterministic scoring requests spread over users and merchants."""
    return [
        {
            "user_id": 1 + (i * 53) % 4999,
            "merchant_id": 1 + (i * 7) % 499,
            "amount": round(5.0 + (i * 37.3) % 900, 2),
            "channel": CHANNELS[i % len(CHANNELS)],
            "country": COUNTRIES[i % len(COUNTRIES)],
        }
        for i in range(n)
    ]


@dataclass(frozen=True)
class Answer:
    score: float
    flags: tuple[tuple[str, ...], tuple[str, ...]]  # missing and stale features

    @classmethod
    def of(cls, body: dict[str, Any]) -> Answer:
        return cls(body["score"], (tuple(body["missing_features"]), tuple(body["stale_features"])))


@dataclass
class Online:
    """A running `python -m serving` over a private Redis, with its reference answers."""

    url: str
    port: int
    redis: PrivateRedis
    requests: list[bytes]  # raw HTTP, one per sample row
    baseline: list[Answer]  # what each request got before any fault

    def server_processes(self) -> list[psutil.Process]:
        """The uvicorn parent and its workers (found by the port on the parent's command)."""
        for child in psutil.Process().children():
            if "serving" in child.cmdline() and str(self.port) in child.cmdline():
                return [child, *child.children(recursive=True)]
        raise RuntimeError(f"no serving process on port {self.port}")

    def rss_mib(self) -> float:
        return sum(p.memory_info().rss for p in self.server_processes()) / 2**20

    def wrong_answers(self, samples: Sequence[Sample]) -> tuple[int, int]:
        """200s whose score differs from the one given before the fault, and those that aged.

        A value that crossed its view's maximum age during the run is served as stale (and
        defaulted), as documented: that answer changes for a stated reason and is not wrong.
        """
        wrong = aged = 0
        for s in samples:
            if s.status == 200:
                now, before = Answer.of(json.loads(s.body)), self.baseline[s.key]
                if now.flags != before.flags:
                    aged += 1
                elif now.score != before.score:
                    wrong += 1
        return wrong, aged


@contextmanager
def online_service(
    settings: Settings,
    workdir: Path,
    workers: int,
    rows: int,
    cpus: set[int] | None = None,
) -> Iterator[Online]:
    """Private Redis loaded from the configured online store, and the API over it.

    With ``cpus``, the server and its Redis run on those cores only (taskset).
    """
    redis_port, port = free_port(), free_port()
    with private_redis(redis_port, workdir / "redis") as server:
        if cpus:
            assert server.proc is not None
            os.sched_setaffinity(server.proc.pid, cpus)
        source = sync_client(settings.redis_connection_string)
        if copy_rows(source, sync_client(f"127.0.0.1:{redis_port}")) == 0:
            raise UserError(
                f"the online store at {describe(settings.redis_connection_string)} is empty: "
                "run `make materialize` (and `make train`) first"
            )
        env = os.environ | {
            "FEATURE_REPO": str(settings.feature_repo),
            "MODEL_DIR": str(settings.model_path),
            "REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}",
            "REDIS_TIMEOUT_MS": str(settings.redis_timeout_ms),
            "SERVING_LIMIT_CONCURRENCY": str(settings.serving_limit_concurrency),
            "SERVING_MAX_IN_FLIGHT": str(settings.serving_max_in_flight),
        }
        url = f"http://127.0.0.1:{port}"
        cmd = serving_command(port, workers)
        if cpus:
            cmd = ["taskset", "--cpu-list", ",".join(map(str, sorted(cpus))), *cmd]
        with launched(cmd, f"{url}/ready", workdir / "serve.log", env, PROJECT_ROOT):
            bodies = [json.dumps(r).encode() for r in sample_rows(rows)]
            with httpx.Client(base_url=url, timeout=10) as client:
                baseline = []
                for body in bodies:
                    r = client.post("/v1/predict", content=body, headers=JSON)
                    r.raise_for_status()
                    baseline.append(Answer.of(r.json()))
            requests = [post("/v1/predict", b) for b in bodies]
            yield Online(url, port, server, requests, baseline)


@contextmanager
def _pinned(cpus: set[int] | None) -> Iterator[None]:
    """Run the calling thread (the load generator) on ``cpus`` only."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def split_cores() -> tuple[set[int] | None, set[int] | None]:
    """Server cores and load-generator cores: the last core drives the load.

    Sharing cores, the Python load generator starved and its own backlog read as server
    latency (p99 9 s of client lag at 2x on this 2-core box); apart, each side has its own.
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return set(cores[:-1]), {cores[-1]}


class _Background:
    """A load running in a thread while the caller injects the fault; join() returns it."""

    def __init__(self, load: Callable[[], list[Sample]]) -> None:
        self._load = load
        self._result: list[Sample] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._load()
        except BaseException as exc:
            self._error = exc

    def join(self) -> list[Sample]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _kinds(samples: Sequence[Sample]) -> str:
    """What the answers other than 200 and 503 were, e.g. `` (2 refused or reset, 1 HTTP 500)``."""
    names = {TIMED_OUT: "without an answer in 10 s", REFUSED: "refused or reset"}
    kinds = Counter(s.status for s in samples if s.status not in (200, 503))
    listed = ", ".join(f"{n} {names.get(st, f'HTTP {st}')}" for st, n in sorted(kinds.items()))
    return f" ({listed})" if listed else ""


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def redis_outage(
    settings: Settings,
    budget_s: float = 20.0,
    *,
    rate: float = 200.0,
    workers: int = 2,
    latency_bound_s: float = 1.0,
    recovery_bound_s: float = 5.0,
) -> list[Check]:
    """SIGKILL Redis during an open-loop load, restart it from its RDB file, keep loading.

    ``budget_s`` is the load's length: a quarter before the kill, a third with Redis down,
    the rest after it returns.
    """
    case = f"redis SIGKILLed {budget_s * 0.33:.1f} s under {rate:.0f} req/s"
    before, down = budget_s * 0.25, budget_s * 0.33
    with (
        tempfile.TemporaryDirectory(prefix="faults-online-") as tmp,
        online_service(settings, Path(tmp), workers, rows=64) as online,
    ):
        load = _Background(lambda: open_loop(online.port, online.requests, rate, budget_s))
        time.sleep(before)
        killed = time.perf_counter()
        online.redis.kill()
        time.sleep(down)
        online.redis.start()
        back = time.perf_counter()
        samples = load.join()
    statuses = [s.status for s in samples]
    other = sum(st not in (200, 503) for st in statuses)
    during = [s for s in samples if killed <= s.due < back]
    shed = sum(s.status == 503 for s in during)
    longest = max((s.latency for s in during), default=0.0)
    after = sorted((s for s in samples if s.due >= back), key=lambda s: s.due)
    failing = [i for i, s in enumerate(after) if s.status != 200]
    first_good = after[failing[-1] + 1] if failing and failing[-1] + 1 < len(after) else None
    if not failing:
        recovery = 0.0
    elif first_good is None:
        recovery = float("inf")
    else:
        recovery = max(0.0, first_good.due + first_good.latency - back)
    wrong, aged = online.wrong_answers(samples)
    counts = f"{len(samples)} ({statuses.count(200)} ok, {statuses.count(503)} 503, {other} other)"
    return [
        Check(case, "requests sent (200 / 503 / other)", counts, True),
        Check(case, "error responses other than 503", f"{other}{_kinds(samples)}", other == 0),
        Check(case, "503s while Redis was down", f"{shed} of {len(during)}", shed > 0),
        Check(
            case, "longest response while Redis was down", _ms(longest), longest <= latency_bound_s
        ),
        Check(
            case,
            "seconds to recover after Redis returned",
            f"{recovery:.2f} s",
            recovery <= recovery_bound_s,
        ),
        Check(
            case,
            "wrong answers (score differs from before)",
            f"{wrong} ({aged} aged past a view's max age: stale, as documented)",
            wrong == 0,
        ),
    ]


def overload(
    settings: Settings,
    budget_s: float = 30.0,
    *,
    capacity_s: float = 5.0,
    factor: float = 2.0,
    latency_bound_s: float = 1.0,
    min_goodput: float = 1 / 3,
) -> list[Check]:
    """Measure capacity, offer ``factor`` times it open-loop for ``budget_s``, then recover.

    The server gets every core but the last, one worker each; the load generator the last.
    ``min_goodput`` asks that shedding keeps a third of capacity answered: rejecting costs
    the same core, and quiet runs kept 47-110% (capacity itself measures 700-1,550 req/s).
    """
    server_cpus, client_cpus = split_cores()
    workers = len(server_cpus or {0})
    with (
        tempfile.TemporaryDirectory(prefix="faults-online-") as tmp,
        online_service(settings, Path(tmp), workers, rows=256, cpus=server_cpus) as online,
        _pinned(client_cpus),
    ):
        closed_loop(online.port, online.requests, 16, 1.0)  # warm-up
        measured = closed_loop(online.port, online.requests, 16, capacity_s)
        capacity = sum(s.status == 200 for s in measured) / capacity_s
        pids = {p.pid for p in online.server_processes()}
        rss_before = online.rss_mib()
        limit = settings.serving_limit_concurrency * workers
        # Room for the server to shed: more connections than its limit admits.
        loaded = open_loop(
            online.port,
            online.requests,
            capacity * factor,
            budget_s,
            max_connections=2 * limit + 100,
        )
        rss_after = online.rss_mib()
        alive = pids == {p.pid for p in online.server_processes()}
        time.sleep(1.0)
        calm = open_loop(online.port, online.requests, capacity / 5, max(2.0, budget_s / 10))
    case = f"{factor:.0f}x capacity for {budget_s:.0f} s"
    ok_lat = [s.latency for s in loaded if s.status == 200]
    shed_lat = [s.latency for s in loaded if s.status == 503]
    served, shed = len(ok_lat), len(shed_lat)
    other = len(loaded) - served - shed
    span = max(s.due + s.latency for s in loaded) - min(s.due for s in loaded)
    goodput = served / span  # over the time it took to answer all, the backlog included
    p99 = _pct(ok_lat, 0.99)
    lag = _pct([s.lag for s in loaded], 0.99)
    wrong, aged = online.wrong_answers([*loaded, *calm])
    calm_ok = sum(s.status == 200 for s in calm)
    growth = rss_after - rss_before
    return [
        Check(
            case, "capacity (closed loop, 16 connections)", f"{capacity:.0f} req/s", capacity > 0
        ),
        Check(
            case,
            "offered (open loop)",
            f"{capacity * factor:.0f} req/s, {len(loaded)} requests",
            True,
        ),
        Check(case, "client lag p99 (due -> written)", _ms(lag), True),
        Check(
            case,
            "answered 200 / shed 503 / other",
            f"{served} / {shed} / {other}{_kinds(loaded)}",
            other == 0,
        ),
        Check(
            case,
            "goodput under overload",
            f"{goodput:.0f} req/s ({goodput / capacity:.0%} of capacity)",
            goodput >= min_goodput * capacity,
        ),
        Check(
            case,
            "latency of 200s p50 / p99 / max",
            f"{_ms(_pct(ok_lat, 0.5))} / {_ms(p99)} / {_ms(max(ok_lat, default=0.0))}",
            p99 <= latency_bound_s,
        ),
        Check(
            case,
            "latency of 503s p99",
            _ms(_pct(shed_lat, 0.99)),
            _pct(shed_lat, 0.99) <= latency_bound_s,
        ),
        Check(
            case,
            "RSS of server processes before -> after",
            f"{rss_before:.0f} -> {rss_after:.0f} MiB (+{growth:.0f})",
            alive and growth <= max(64.0, 0.25 * rss_before),
        ),
        Check(
            case,
            "after: 200s at a fifth of capacity",
            f"{calm_ok} of {len(calm)}",
            calm_ok == len(calm),
        ),
        Check(
            case,
            "wrong answers (score differs from before)",
            f"{wrong} ({aged} aged past a view's max age: stale, as documented)",
            wrong == 0,
        ),
    ]


def run(settings: Settings, budget_s: float = 30.0) -> list[Check]:
    """Both faults; ``budget_s`` is the overload's length, the outage load gets two thirds."""
    workers = os.cpu_count() or 1  # as `python -m serving` runs by default
    return redis_outage(settings, budget_s * 2 / 3, workers=workers) + overload(settings, budget_s)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m verify.faults_online", description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="overload length (default 30)")
    return parser


def _main(args: argparse.Namespace) -> int:
    checks = run(get_settings(), args.seconds)
    server, client = split_cores()
    conditions = {
        "seconds": args.seconds,
        "cores": os.cpu_count(),
        "overload_server_cores": sorted(server or []),
        "overload_client_cores": sorted(client or []),
    }
    print(table(checks))
    print(f"conditions: {conditions}")
    print(f"written: {write_json('faults_online', checks, conditions)}")
    return 0 if all(c.ok for c in checks) else 1


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
