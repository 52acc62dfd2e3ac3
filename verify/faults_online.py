"""`python -m verify.faults_online`: the online service with Redis killed or stalled; overload.

Real processes throughout: `python -m serving` under uvicorn, a private redis-server loaded
with the online store's rows that is SIGKILLed and restarted from its RDB file, then stalled
(SIGSTOP/SIGCONT) (the shared one is never touched), and an open-loop load on loopback
(harness.loadgen), bounded in time and count. Every answer is compared with the one the same
request got before the fault: a fault may cost answers, never change one. The test
(tests/integration/test_faults_online.py) runs the same scenarios at a small size.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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
from core.plan import plan_service
from core.redis_url import describe, sync_client
from core.settings import PROJECT_ROOT, Settings, get_settings
from core.store import feature_service, open_store
from harness.loadgen import REFUSED, TIMED_OUT, Sample, closed_loop, open_loop, post
from harness.models import champion_dir_or_exit
from harness.report import Check, table, write_json
from harness.servers import (
    PrivateRedis,
    copy_rows,
    free_port,
    launched,
    private_redis,
    serving_command,
)

COUNTRIES = ("GB", "US", "FR", "DE", "ES", "IT")
CHANNELS = ("online", "pos", "atm")
JSON = {"Content-Type": "application/json"}
SHED = b'"detail":"overloaded:'  # serving.shed's 503 body; uvicorn's own 503 is plain text
UNAVAILABLE = b"online store unavailable"  # the API's 503 body when a Redis read fails


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
    """What one 200 said, and when: the score, the defaulted features, each view's age."""

    score: float
    missing: frozenset[str]
    stale: frozenset[str]
    ages: tuple[tuple[str, float | None], ...]
    at: float  # time.perf_counter() when it was answered

    @classmethod
    def of(cls, body: dict[str, Any], at: float) -> Answer:
        missing, stale = frozenset(body["missing_features"]), frozenset(body["stale_features"])
        ages = tuple(sorted(body["feature_age_seconds"].items()))
        return cls(body["score"], missing, stale, ages, at)

    def age(self, view: str) -> float | None:
        return dict(self.ages).get(view)

    def same(self, other: Answer) -> bool:
        return (self.score, self.missing, self.stale) == (other.score, other.missing, other.stale)


@dataclass(frozen=True)
class Verdict:
    """200s compared with the answer each request got before any fault."""

    wrong: int  # changed with no view crossing its maximum age
    aged: int  # changed because a view crossed its maximum age: stale, as documented
    clock_allows: int  # answers whose views could have crossed it in the time elapsed
    compared: int


def view_limits(settings: Settings) -> tuple[dict[str, float], dict[str, str]]:
    """Each stored view's maximum age (as the API applies it), and each feature's view."""
    store = open_store(settings)
    plan = plan_service(store, feature_service(store))
    limits = {}
    for read in plan.stored:
        ttl = read.view.ttl.total_seconds() if read.view.ttl else None
        limit = settings.serving_max_age_seconds.get(read.name, ttl)
        if limit is not None:
            limits[read.name] = limit
    return limits, {f: read.name for read in plan.stored for f in read.features}


@dataclass
class Online:
    """A running `python -m serving` over a private Redis, with its reference answers."""

    url: str
    port: int
    redis: PrivateRedis
    requests: list[bytes]  # raw HTTP, one per sample row
    baseline: list[Answer]  # what each request got before any fault
    max_age: dict[str, float]  # per view, as the API applies it
    view_of: dict[str, str]  # feature -> its stored view

    def server_processes(self) -> list[psutil.Process]:
        """The uvicorn parent and its workers (found by the port on the parent's command)."""
        for child in psutil.Process().children():
            if "serving" in child.cmdline() and str(self.port) in child.cmdline():
                return [child, *child.children(recursive=True)]
        raise RuntimeError(f"no serving process on port {self.port}")

    def rss_mib(self) -> float:
        return sum(p.memory_info().rss for p in self.server_processes()) / 2**20

    def judge(self, samples: Sequence[Sample]) -> Verdict:
        """Compare every 200 with the answer its request got before the fault.

        A change is excused only when a view's age, as served, crossed its maximum age since
        then (its values are then stale and defaulted, as documented); any other is wrong.
        """
        wrong = aged = allowed = compared = 0
        for s in samples:
            if s.status != 200:
                continue
            before = self.baseline[s.key]
            now = Answer.of(json.loads(s.body), s.due + s.latency)
            compared += 1
            allowed += self._may_age(before, now.at)
            if not now.same(before):
                aged += self._aged(before, now)
                wrong += not self._aged(before, now)
        return Verdict(wrong, aged, allowed, compared)

    def _may_age(self, before: Answer, at: float) -> bool:
        """Whether the clock lets one of ``before``'s views cross its maximum age by ``at``."""
        ages = [(before.age(v), limit) for v, limit in self.max_age.items()]
        return any(a is not None and a <= limit < a + (at - before.at) for a, limit in ages)

    def _aged(self, before: Answer, now: Answer) -> bool:
        """Whether ``now`` differs from ``before`` only by views that crossed their max age."""
        newly = now.stale - before.stale
        views = {self.view_of[f] for f in newly}
        crossed = all((now.age(v) or 0.0) > self.max_age[v] for v in views)
        return (
            bool(newly) and before.stale <= now.stale and now.missing == before.missing and crossed
        )


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
            "MODEL_DIR": str(champion_dir_or_exit(settings)),
            "REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}",
            "REDIS_TIMEOUT_MS": str(settings.redis_timeout_ms),
            "SERVING_LIMIT_CONCURRENCY": str(settings.serving_limit_concurrency),
            "SERVING_MAX_IN_FLIGHT": str(settings.serving_max_in_flight),
        }
        url = f"http://127.0.0.1:{port}"
        cmd = serving_command(port, workers)
        if cpus:
            cmd = ["taskset", "--cpu-list", ",".join(map(str, sorted(cpus))), *cmd]
        max_age, view_of = view_limits(settings)
        with launched(cmd, f"{url}/ready", workdir / "serve.log", env, PROJECT_ROOT):
            bodies = [json.dumps(r).encode() for r in sample_rows(rows)]
            with httpx.Client(base_url=url, timeout=10) as client:
                baseline = []
                for body in bodies:
                    r = client.post("/v1/predict", content=body, headers=JSON)
                    r.raise_for_status()
                    baseline.append(Answer.of(r.json(), time.perf_counter()))
            requests = [post("/v1/predict", b) for b in bodies]
            yield Online(url, port, server, requests, baseline, max_age, view_of)


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

    Sharing cores, the load generator's own backlog reads as server latency
    (docs/performance.md, "Overload proof").
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


def _reason(s: Sample) -> str:
    """What a non-200 was: which of the three 503s, or which failure."""
    if s.status == 503:
        if _shed(s):
            return "503 shed"
        return "503 store unavailable" if UNAVAILABLE in s.body else "503 limit_concurrency"
    names = {TIMED_OUT: "without an answer in 10 s", REFUSED: "refused or reset"}
    return names.get(s.status, f"HTTP {s.status}")


def _kinds(samples: Sequence[Sample], expected: tuple[int, ...] = (200, 503)) -> str:
    """What the answers outside ``expected`` were, e.g. `` (2 refused or reset, 1 HTTP 500)``."""
    kinds = Counter(_reason(s) for s in samples if s.status not in expected)
    listed = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    return f" ({listed})" if listed else ""


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _answers(case: str, verdict: Verdict) -> list[Check]:
    """The two rows every case reports about its 200s: none wrong, none aged unexplained."""
    return [
        Check(
            case,
            "wrong answers (differ from before)",
            f"{verdict.wrong} of {verdict.compared} compared",
            verdict.wrong == 0 and verdict.compared > 0,
        ),
        Check(
            case,
            "changed because a view passed its max age",
            f"{verdict.aged} (the clock allows {verdict.clock_allows})",
            verdict.aged <= verdict.clock_allows,
        ),
    ]


@dataclass(frozen=True)
class Fault:
    """One fault injected under the load: what it was and when, on time.perf_counter()."""

    name: str
    start: float
    end: float  # when it was undone
    next_start: float  # when the next fault began (or the load ended)


def _fault_checks(
    fault: Fault, samples: Sequence[Sample], bound_s: float, recovery_bound_s: float
) -> list[Check]:
    """503s (with Retry-After) within ``bound_s`` during the fault, 200s again soon after."""
    during = [s for s in samples if fault.start <= s.due < fault.end]
    unavailable = [s for s in during if s.status == 503 and UNAVAILABLE in s.body]
    without_retry = sum(s.retry_after != b"1" for s in during if s.status == 503)
    longest = max((s.latency - s.lag for s in during), default=float("inf"))  # from written
    after = sorted(
        (s for s in samples if fault.end <= s.due and s.due + s.latency < fault.next_start),
        key=_due,
    )  # answered before the next fault began, which would otherwise fail the last of them
    failing = [i for i, s in enumerate(after) if s.status != 200]
    if not after or (failing and failing[-1] + 1 == len(after)):
        recovery = float("inf")  # nothing was sent after the fault, or nothing succeeded
    elif not failing:
        recovery = 0.0
    else:
        first_good = after[failing[-1] + 1]
        recovery = max(0.0, first_good.due + first_good.latency - fault.end)
    return [
        Check(
            fault.name,
            "503 'online store unavailable' while it lasted",
            f"{len(unavailable)} of {len(during)}",
            len(unavailable) > 0,
        ),
        Check(fault.name, "503s without Retry-After: 1", str(without_retry), without_retry == 0),
        Check(
            fault.name,
            f"longest answer, from sent, while it lasted (bound {_ms(bound_s)})",
            _ms(longest),
            longest <= bound_s,
        ),
        Check(
            fault.name,
            f"seconds to recover after it ended ({len(after)} requests after)",
            f"{recovery:.2f} s",
            recovery <= recovery_bound_s,
        ),
    ]


def _due(s: Sample) -> float:
    return s.due


def _stall(redis: PrivateRedis, seconds: float) -> None:
    """SIGSTOP Redis for ``seconds``: it holds its connections but answers nothing."""
    assert redis.proc is not None
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)


def _restart(redis: PrivateRedis, seconds: float) -> None:
    """SIGKILL Redis, wait ``seconds``, start it again from its RDB file."""
    redis.kill()
    time.sleep(seconds)
    redis.start()


def redis_outage(
    settings: Settings,
    budget_s: float = 20.0,
    *,
    rate: float = 200.0,
    workers: int = 2,
    margin_s: float = 0.1,
    recovery_bound_s: float = 5.0,
) -> list[Check]:
    """Under one open-loop load, SIGKILL Redis and restart it, then stall it (SIGSTOP/SIGCONT).

    ``budget_s`` is the load's length, in fifths: calm, killed, calm, stalled, calm. While
    a fault lasts every answer must come within ``REDIS_TIMEOUT_MS`` plus ``margin_s``.
    """
    fifth = budget_s / 5
    bound_s = settings.redis_timeout_ms / 1000 + margin_s
    rows = max(64, int(rate * budget_s / 4))  # few repeats: most answers compared are new
    with (
        tempfile.TemporaryDirectory(prefix="faults-online-") as tmp,
        online_service(settings, Path(tmp), workers, rows=rows) as online,
    ):
        load = _Background(lambda: open_loop(online.port, online.requests, rate, budget_s))
        spans = []
        for inject in (_restart, _stall):
            time.sleep(fifth)
            start = time.perf_counter()
            inject(online.redis, fifth)
            spans.append((start, time.perf_counter()))
        samples = load.join()
        verdict = online.judge(samples)
    names = [f"redis SIGKILLed {fifth:.1f} s, restarted", f"redis stalled (SIGSTOP) {fifth:.1f} s"]
    ends = [spans[1][0], float("inf")]
    faults = [Fault(n, s, e, nxt) for n, (s, e), nxt in zip(names, spans, ends, strict=True)]
    case = f"redis faults under {rate:.0f} req/s for {budget_s:.0f} s"
    statuses = Counter(s.status for s in samples)
    other = sum(n for st, n in statuses.items() if st not in (200, 503))
    counts = f"{len(samples)} ({statuses[200]} ok, {statuses[503]} 503, {other} other)"
    checks = [
        Check(case, "requests sent (200 / 503 / other)", counts, len(samples) > 0),
        Check(case, "error responses other than 503", f"{other}{_kinds(samples)}", other == 0),
    ]
    for fault in faults:
        checks += _fault_checks(fault, samples, bound_s, recovery_bound_s)
    return checks + _answers(case, verdict)


def _shed(s: Sample) -> bool:
    """A 503 from the load shedder (``SERVING_MAX_IN_FLIGHT``), not uvicorn's connection limit."""
    return s.status == 503 and SHED in s.body.replace(b" ", b"")


@dataclass(frozen=True)
class OverloadRun:
    """What an overload run measured: capacity, the samples under load and after it."""

    capacity: float
    loaded: list[Sample]
    calm: list[Sample]
    rss_mib: tuple[float, float]
    alive: bool
    verdict: Verdict


def _overload_run(
    settings: Settings, budget_s: float, capacity_s: float, factor: float
) -> OverloadRun:
    """The server gets every core but the last, one worker each; the load generator the last."""
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
        time.sleep(1.0)  # the load's closed connections reach the server first
        calm = open_loop(online.port, online.requests, capacity / 5, max(2.0, budget_s / 10))
        verdict = online.judge([*loaded, *calm])
    return OverloadRun(capacity, loaded, calm, (rss_before, rss_after), alive, verdict)


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

    Shedding must happen (503s from ``SERVING_MAX_IN_FLIGHT``) and answer, as the 200s do,
    within ``latency_bound_s`` (p99); ``min_goodput`` is the share of capacity still served.
    """
    run = _overload_run(settings, budget_s, capacity_s, factor)
    loaded, capacity = run.loaded, run.capacity
    case = f"{factor:.0f}x capacity for {budget_s:.0f} s"
    ok_lat = [s.latency for s in loaded if s.status == 200]
    shed_lat = [s.latency for s in loaded if _shed(s)]
    other = sum(s.status not in (200, 503) for s in loaded)
    span = max(s.due + s.latency for s in loaded) - min(s.due for s in loaded)
    goodput = len(ok_lat) / span  # over the time it took to answer all, the backlog included
    p99, shed_p99 = _pct(ok_lat, 0.99), _pct(shed_lat, 0.99)
    answered = f"{len(ok_lat)} ok{_kinds(loaded, (200,))}"
    return [
        Check(
            case, "capacity (closed loop, 16 connections)", f"{capacity:.0f} req/s", capacity > 0
        ),
        Check(case, "offered (open loop)", f"{capacity * factor:.0f} req/s, {len(loaded)}", True),
        Check(
            case, "client lag p99 (due -> written)", _ms(_pct([s.lag for s in loaded], 0.99)), True
        ),
        Check(case, "answers (no error but 503)", answered, other == 0),
        Check(case, "shed by SERVING_MAX_IN_FLIGHT", str(len(shed_lat)), len(shed_lat) > 0),
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
        Check(case, "latency of shed 503s p99", _ms(shed_p99), shed_p99 <= latency_bound_s),
        *_aftermath(case, run),
    ]


def _aftermath(case: str, run: OverloadRun) -> list[Check]:
    """The server as the overload left it: alive, no leak, serving at once, no changed answer."""
    rss_before, rss_after = run.rss_mib
    growth = rss_after - rss_before
    calm_ok = sum(s.status == 200 for s in run.calm)
    return [
        Check(
            case,
            "RSS of server processes before -> after",
            f"{rss_before:.0f} -> {rss_after:.0f} MiB (+{growth:.0f})",
            run.alive and growth <= max(64.0, 0.25 * rss_before),
        ),
        Check(
            case,
            "after: 200s at a fifth of capacity",
            f"{calm_ok} of {len(run.calm)}{_kinds(run.calm, (200,))}",
            calm_ok == len(run.calm) > 0,
        ),
        *_answers(case, run.verdict),
    ]


def run(settings: Settings, budget_s: float = 30.0) -> list[Check]:
    """Redis faults, then overload; ``budget_s`` is the overload's length, the outage load
    gets two thirds of it."""
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
