"""``python -m verify.fuzz_stream``: hostile events through the real broker and dataflow.

A seeded corpus (``verify.fuzz_corpus``) of good transactions interleaved with truncated
JSON, wrong types, missing fields, huge numbers, NaN/Infinity, invalid UTF-8, lone
surrogates, unknown entities and duplicate deliveries goes into fresh topics, once per
unknown-entity policy; the dataflow drains each. A third run puts a message just below
the broker's size limit between good events; one just above it must fail at the producer.

Promised: every bad event is in the dead-letter topic with its reason, every good event
is scored, the flow ends cleanly, and the online window aggregates equal the backfill's
over the unique good events (a re-delivered transaction is counted once).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import IO, Any

import numpy as np
import pandas as pd
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from core.aggregations import FEATURE_NAMES, backfill_sql
from core.cli import Parser, run_cli
from core.contract import WINDOWS_VIEW
from core.duck import connect
from core.kafka import ensure_topics
from core.redis_url import with_db
from core.settings import PROJECT_ROOT, Settings
from core.store import open_store
from harness.flow import BATCH_FLOW as FLOW
from harness.flow import flow_env as harness_flow_env
from harness.kafka import Record, Topics, drain
from harness.report import Check, table, write_json
from verify.fuzz_corpus import (
    BAD,
    SCORE,
    UNKNOWN,
    Case,
    Population,
    build,
    dumps,
    key_of,
    padded,
)

POLICIES = ("score", "dead_letter")
Message = Record
SCORE_FIELD = re.compile(rb'"score":\s*([-+0-9.eE]+|NaN)')
QUIET = 3  # librdkafka logs errors only: the expected size rejections would flood the table


@dataclass(frozen=True)
class Outcome:
    """What one dataflow run left in its topics."""

    returncode: int
    log: str
    scores: list[Message]
    dead: list[Message]


@dataclass(frozen=True)
class Run:
    pop: Population
    cases: list[Case]
    out: Outcome


def private_population(settings: Settings, users: int, load_merchants: bool) -> Population:
    """Profiles of ``users`` users copied to a fresh id range, so the run changes no one
    else's online windows; merchants are shared (read only)."""
    store = open_store(settings)
    now = datetime.now(timezone.utc) - timedelta(minutes=5)
    data = settings.data_dir
    profiles = pd.read_parquet(data / "user_profile.parquet")
    profiles = profiles[profiles.user_id < users].sort_values("event_timestamp")
    latest = profiles.groupby("user_id").tail(1).copy()
    offset = 10**12 + uuid.uuid4().int % 10**9 * 1000
    latest["user_id"] += offset
    latest["event_timestamp"] = now
    store.write_to_online_store("user_profile", latest)
    merchants = pd.read_parquet(data / "merchant_profile.parquet").sort_values("event_timestamp")
    merchants = merchants.groupby("merchant_id").tail(1).copy()
    if load_merchants:  # a fresh database: the command's own
        store.write_to_online_store("merchant_profile", merchants.assign(event_timestamp=now))
    return Population(
        users=[int(u) for u in latest.user_id],
        merchants=[int(m) for m in merchants.merchant_id],
        unknown_user=offset + 10**8,
        unknown_merchant=10**15 + offset,
    )


def size_limit(bootstrap: str, topic: str) -> int:
    """The largest record batch the broker accepts for ``topic`` (its max.message.bytes)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": QUIET})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    return int(configs["max.message.bytes"].value)


def produce(bootstrap: str, topic: str, cases: Sequence[Case], max_bytes: int) -> None:
    """Every case, in order, idempotently (a retry must not add a duplicate of its own)."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "log_level": QUIET,
            "acks": "all",
            "enable.idempotence": True,
            "message.max.bytes": max_bytes,
        }
    )
    failed: list[str] = []

    def report(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failed.append(str(err))

    for case in cases:
        producer.produce(topic, case.value, case.key, on_delivery=report)
        producer.poll(0)
    if producer.flush(60) or failed:
        raise RuntimeError(f"corpus not delivered to {topic}: {failed[:3]}")


def flow_env(settings: Settings, topics: Topics, policy: str) -> dict[str, str]:
    # The corpus's extra_field and near-limit (padded) cases are malformed only under the
    # strict contract; the default (ignore) is tested in test_event_contract.
    return harness_flow_env(settings, settings.kafka_bootstrap_servers, topics) | {
        "STREAM_UNKNOWN_ENTITY": policy,
        "STREAM_EXTRA_FIELDS": "dead_letter",
    }


@dataclass
class Flow:
    """A dataflow draining its own topics in a child process."""

    bootstrap: str
    topics: Topics
    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    def outcome(self) -> Outcome:
        self.proc.wait(timeout=600)
        self.log.seek(0)
        text = self.log.read().decode(errors="replace")[-2000:]
        self.log.close()
        scores, dead = (
            drain(self.bootstrap, self.topics.scores),
            drain(self.bootstrap, self.topics.dlq),
        )
        return Outcome(self.proc.returncode, text, scores, dead)


def start_flow(settings: Settings, cases: Sequence[Case], policy: str, max_bytes: int) -> Flow:
    """Produce ``cases`` into fresh topics and start the dataflow that drains them."""
    bootstrap = settings.kafka_bootstrap_servers
    topics = Topics.fresh("fuzz")
    names = (topics.transactions, topics.scores, topics.dlq)
    ensure_topics({"bootstrap.servers": bootstrap}, names, 3)
    produce(bootstrap, topics.transactions, cases, max_bytes)
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by Flow.outcome)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", FLOW],
        cwd=PROJECT_ROOT,
        env=flow_env(settings, topics, policy),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return Flow(bootstrap, topics, proc, log)


def expected_reasons(case: Case, policy: str) -> frozenset[str]:
    if case.expect == {UNKNOWN}:
        return frozenset({SCORE if policy == "score" else UNKNOWN})
    return case.expect


def applied(cases: Sequence[Case], policy: str) -> list[Case]:
    """The events the windows must hold: scored ones, each transaction once."""
    seen: set[str] = set()
    out = []
    for c in cases:
        if SCORE in expected_reasons(c, policy) and c.transaction_id not in seen:
            assert c.transaction_id is not None
            seen.add(c.transaction_id)
            out.append(c)
    return out


def window_mismatches(settings: Settings, cases: Sequence[Case], users: Sequence[int]) -> int:
    """Users whose online window row differs from the backfill at their newest event."""
    frame = pd.DataFrame([c.body for c in cases if c.body is not None])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    con = connect()
    con.register("events", frame)
    every = con.execute(backfill_sql("events")).df()
    want = every.sort_values("event_timestamp").groupby("user_id").tail(1).set_index("user_id")
    got = (
        open_store(settings)
        .get_online_features(
            features=[f"{WINDOWS_VIEW}:{n}" for n in FEATURE_NAMES],
            entity_rows=[{"user_id": u} for u in users],
        )
        .to_df()
        .set_index("user_id")
    )
    known = [u for u in users if u in want.index]
    names = list(FEATURE_NAMES)
    a = got.loc[known, names].astype("float64").to_numpy()
    b = want.loc[known, names].astype("float64").to_numpy()
    return int((~np.isclose(a, b, rtol=1e-9, atol=0, equal_nan=True).all(axis=1)).sum())


def exit_text(out: Outcome) -> str:
    """The exit code, and the error a failed run ended with."""
    if out.returncode == 0:
        return "0"
    errors = re.findall(r"^[\w.]+(?:Error|Exception): .*$", out.log, re.MULTILINE)
    return f"{out.returncode} ({errors[0][:90] if errors else 'see log'})"


def score_id(key: bytes | None) -> str:
    return (key or b"").decode("utf-8", "replace")


def corpus_checks(settings: Settings, runs: dict[str, Run]) -> list[Check]:
    """The promises, per bad kind and per run."""
    checks: list[Check] = []
    by_kind: dict[str, list[bool]] = {}
    unexpected = 0
    headers_ok = headers_n = 0
    for policy, r in runs.items():
        cases, out = r.cases, r.out
        got: Counter[bytes] = Counter()
        reasons_of: dict[bytes, list[str]] = {}
        for _key, value, headers in out.dead:
            got[value] += 1
            reasons_of.setdefault(value, []).append(headers.get("reason", b"").decode())
            headers_n += 1
            headers_ok += bool(headers.get("reason")) and bool(headers.get("detail"))
        for c in cases:
            reasons = expected_reasons(c, policy) - {SCORE}
            if not reasons:
                continue
            seen = reasons_of.get(c.value, [])
            hit = next((r for r in seen if r in reasons), None)
            if hit is not None:
                seen.remove(hit)
            by_kind.setdefault(c.kind if c.kind in BAD else f"{c.kind} [{policy}]", []).append(
                hit is not None
            )
        unexpected += sum(len(v) for v in reasons_of.values())
    for kind, hits in by_kind.items():
        expect = "/".join(sorted(BAD[kind][1])) if kind in BAD else UNKNOWN
        checks.append(
            Check(kind, f"dead-lettered as {expect}", f"{sum(hits)}/{len(hits)}", all(hits))
        )
    checks.append(
        Check(
            "dead letters",
            "carry reason and detail headers",
            f"{headers_ok}/{headers_n}",
            0 < headers_ok == headers_n,
        )
    )
    checks.append(Check("dead letters", "of good events", str(unexpected), unexpected == 0))
    for policy, r in runs.items():
        checks += run_checks(settings, policy, r)
    return checks


def run_checks(settings: Settings, policy: str, r: Run) -> list[Check]:
    cases, out, pop = r.cases, r.out, r.pop
    label = f"[{policy}]"
    due = [c for c in cases if SCORE in expected_reasons(c, policy)]
    ids = Counter(score_id(k) for k, _, _ in out.scores)
    want_ids = {c.transaction_id for c in due}
    scored = sum(1 for t in want_ids if ids[str(t)] > 0)
    extra = sum(n for t, n in ids.items() if t not in want_ids)
    valid = 0
    scores_by_id: dict[str, set[bytes]] = {}
    for key, value, _ in out.scores:
        try:
            json.loads(value)
            valid += 1
        except ValueError:
            pass
        # Read without a JSON parser too, so an unescaped id cannot hide a score.
        found = SCORE_FIELD.search(value)
        scores_by_id.setdefault(score_id(key), set()).add(found.group(1) if found else b"")
    dups = [c for c in cases if c.kind == "duplicate"]
    deliveries = Counter(c.transaction_id for c in cases if SCORE in expected_reasons(c, policy))
    per_delivery = sum(
        1 for c in dups if ids[str(c.transaction_id)] == deliveries[c.transaction_id]
    )
    same = sum(1 for c in dups if len(scores_by_id.get(str(c.transaction_id), ())) == 1)
    redelivered = {int((c.body or {})["user_id"]) for c in dups}
    others = [u for u in pop.users if u not in redelivered]
    events = applied(cases, policy)
    plain_bad = window_mismatches(settings, events, others)
    dup_bad = window_mismatches(settings, events, sorted(redelivered))
    unknown = [str(c.transaction_id) for c in cases if c.kind == "unknown_entity"]
    unknown_scored = sum(1 for t in unknown if ids[t] > 0)
    checks = [
        Check(f"flow {label}", "exit code", exit_text(out), out.returncode == 0),
        Check(
            f"good events {label}", "scored", f"{scored}/{len(want_ids)}", scored == len(want_ids)
        ),
        Check(f"good events {label}", "scores for other ids", str(extra), extra == 0),
    ]
    if policy == "score":  # the default: scored with null profile features
        checks.append(
            Check(
                "unknown_entity [score]",
                "scored (profile features null)",
                f"{unknown_scored}/{len(unknown)}",
                unknown_scored == len(unknown),
            )
        )
    checks += [
        Check(
            f"scores {label}",
            "valid JSON",
            f"{valid}/{len(out.scores)}",
            0 < valid == len(out.scores),
        ),
        Check(
            f"duplicates {label}",
            "a score per delivery",
            f"{per_delivery}/{len(dups)}",
            0 < per_delivery == len(dups),
        ),
        Check(
            f"duplicates {label}",
            "same score on every delivery",
            f"{same}/{len(dups)}",
            0 < same == len(dups),
        ),
        Check(
            f"windows {label}",
            "users differing from the backfill",
            f"{plain_bad}/{len(others)}",
            plain_bad == 0 and len(others) > 0,
        ),
        Check(
            f"duplicates {label}",
            "users whose windows count a re-delivery twice",
            f"{dup_bad}/{len(redelivered)}",
            dup_bad == 0 and len(redelivered) > 0,
        ),
    ]
    return checks


def send_once(bootstrap: str, topic: str, value: bytes, max_bytes: int | None) -> str:
    """The error name of producing ``value`` once (or "delivered")."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "acks": "all", "log_level": QUIET}
    if max_bytes:
        config["message.max.bytes"] = max_bytes
    producer = Producer(config)
    failures: list[KafkaError] = []

    def report(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(err)

    try:
        producer.produce(topic, value, on_delivery=report)
        producer.flush(30)
    except KafkaException as exc:
        failures.append(exc.args[0])
    return failures[0].name() if failures else "delivered"


@dataclass(frozen=True)
class Oversized:
    cases: list[Case]  # good events, with ``near`` in the middle
    near: Case
    limit: int
    probe: str  # a topic for the over-limit attempt


def oversized_corpus(settings: Settings, pop: Population, seed: int) -> Oversized:
    """Good events around one message 512 B under the topic's size limit."""
    bootstrap = settings.kafka_bootstrap_servers
    cases = build(seed + 1, pop, 20, 0, datetime.now(timezone.utc) - timedelta(minutes=1))
    probe = Topics.fresh("fuzz").transactions
    ensure_topics({"bootstrap.servers": bootstrap}, [probe], 1)
    limit = size_limit(bootstrap, probe)
    body = dict(cases[0].body or {}) | {"transaction_id": f"big-{uuid.uuid4().hex[:8]}"}
    # A one-record batch adds ~70 bytes of framing to key and value.
    near = Case(
        "oversized", key_of(body), padded(body, limit - 512), frozenset({"schema"}), None, body
    )
    half = len(cases) // 2
    return Oversized([*cases[:half], near, *cases[half:]], near, limit, probe)


def oversized_checks(settings: Settings, o: Oversized, out: Outcome) -> list[Check]:
    """Just below the broker's limit: dead-lettered between good events that still score.
    Just above: the producer fails, clearly, and nothing reaches the topic."""
    # Whole, or cut short (a dead-letter producer may cap the value; the original stays in
    # the source topic) as long as it is the message's own bytes.
    reasons = [
        h.get("reason", b"").decode() for _, v, h in out.dead if v and o.near.value.startswith(v)
    ]
    good = {str(c.transaction_id) for c in o.cases if c is not o.near}
    scored = {score_id(k) for k, _, _ in out.scores} & good
    checks = [
        Check(
            "oversized, 512 B under the limit",
            f"dead-lettered ({len(o.near.value)} B, limit {o.limit} B)",
            ",".join(reasons) or "missing",
            reasons == ["schema"],
        ),
        Check(
            "oversized, 512 B under the limit",
            "flow exit code; good events around it scored",
            f"{exit_text(out)}; {len(scored)}/{len(good)}",
            out.returncode == 0 and len(scored) == len(good),
        ),
    ]
    bootstrap = settings.kafka_bootstrap_servers
    over = padded(o.near.body or {}, o.limit + 1)
    # librdkafka's own bound first, then (client bound raised) the broker's.
    errors = [send_once(bootstrap, o.probe, over, bound) for bound in (None, 4 * o.limit)]
    landed = len(drain(bootstrap, o.probe))
    checks.append(
        Check(
            "oversized, 1 B over the limit",
            "producer error (client bound; broker bound); records in topic",
            f"{errors[0]}; {errors[1]}; {landed}",
            errors == ["MSG_SIZE_TOO_LARGE"] * 2 and landed == 0,
        )
    )
    return checks


def future_corpus(pop: Population) -> list[Case]:
    """One user: an event stamped 9999-12-31, then three real ones."""
    now = datetime.now(timezone.utc)
    tag = uuid.uuid4().hex[:8]
    template = {
        "user_id": pop.users[0],
        "merchant_id": pop.merchants[0],
        "amount": 12.5,
        "channel": "pos",
        "country": "DE",
    }
    stamps = ["9999-12-31T23:59:59+00:00"] + [
        (now - timedelta(minutes=3 - i)).isoformat() for i in range(3)
    ]
    bodies = [
        template | {"transaction_id": f"future-{tag}-{i}", "event_timestamp": t}
        for i, t in enumerate(stamps)
    ]
    return [
        Case("far_future", key_of(b), dumps(b), frozenset(), str(b["transaction_id"]), b)
        for b in bodies
    ]


def future_checks(cases: list[Case], out: Outcome) -> list[Check]:
    """A far-future event time must not poison its user: it is dead-lettered, and the
    user's next real events are scored (an accepted year-9999 event makes every later one
    "late")."""
    dead = {json.loads(v)["transaction_id"]: h.get("reason", b"").decode() for _, v, h in out.dead}
    scored = {score_id(k) for k, _, _ in out.scores}
    first, later = str(cases[0].transaction_id), [str(c.transaction_id) for c in cases[1:]]
    return [
        Check(
            "far-future event time (year 9999)",
            "dead-lettered; the user's next 3 events scored",
            f"{dead.get(first, 'scored' if first in scored else 'missing')}; "
            f"{sum(t in scored for t in later)}/3 ({', '.join(sorted(set(dead.values()))) or '-'})",
            first in dead and all(t in scored for t in later),
        )
    ]


def run(
    settings: Settings, budget: int = 300, seed: int = 6, load_merchants: bool = False
) -> list[Check]:
    """``budget`` good events per policy run; bad events scale with it. The four flows
    (two policies, far-future, near-limit) run at once: each has its own topics and users."""
    users = max(10, budget // 8)
    corpora: dict[str, tuple[Population, list[Case]]] = {}
    flows: dict[str, Flow] = {}
    for policy in POLICIES:
        # A policy changes which events reach the windows: each run has its own users.
        pop = private_population(settings, users, load_merchants and not corpora)
        end = datetime.now(timezone.utc) - timedelta(minutes=1)
        corpora[policy] = (pop, build(seed, pop, budget, max(2, budget // 60), end))
        flows[policy] = start_flow(settings, corpora[policy][1], policy, 1 << 20)
    future = future_corpus(private_population(settings, 10, False))
    flows["future"] = start_flow(settings, future, "score", 1 << 20)
    big = oversized_corpus(settings, private_population(settings, 10, False), seed)
    flows["oversized"] = start_flow(settings, big.cases, "score", 2 * big.limit)
    outcomes = {name: flow.outcome() for name, flow in flows.items()}
    runs = {p: Run(*corpora[p], outcomes[p]) for p in POLICIES}
    checks = corpus_checks(settings, runs)
    checks += future_checks(future, outcomes["future"])
    return checks + oversized_checks(settings, big, outcomes["oversized"])


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m verify.fuzz_stream", description=__doc__)
    parser.add_argument("--budget", type=int, default=3000, help="good events per run")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--redis-db", type=int, default=7, help="a database of this command's own")
    return parser


def _main(args: argparse.Namespace) -> int:
    base = Settings()
    redis = with_db(base.redis_connection_string, args.redis_db)
    settings = base.model_copy(update={"redis_connection_string": redis})
    began = time.monotonic()
    checks = run(settings, args.budget, args.seed, load_merchants=True)
    print(table(checks))
    extra = {
        "budget": args.budget,
        "seed": args.seed,
        "seconds": round(time.monotonic() - began, 1),
    }
    print(f"wrote {write_json('fuzz_stream', checks, extra)}")
    return 0 if all(c.ok for c in checks) else 1


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
