"""A seeded corpus of hostile Kafka messages interleaved with good transactions.

Pure: no I/O. The same seed gives the same cases in the same order (kinds, positions,
truncation points, field choices); user ids and times come from the caller, so each
run can use a private id range and fresh timestamps. Every case knows what the flow
must do with it, from the schema in ``core.events`` and the documented dead-letter
reasons, not from running the flow.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from core.events import CHANNELS, MAX_AMOUNT

Body = dict[str, Any]
SCORE = "score"  # the expectation of a good event; anything else is a dead-letter reason
UNKNOWN = "unknown_entity"  # scored or dead-lettered, by STREAM_UNKNOWN_ENTITY


@dataclass(frozen=True)
class Case:
    kind: str
    key: bytes | None
    value: bytes
    expect: frozenset[str]  # {SCORE}, {UNKNOWN} or the dead-letter reasons allowed
    transaction_id: str | None = None  # set where a score (or a window update) is due
    body: Body | None = None  # the parsed event, where it is one


@dataclass(frozen=True)
class Population:
    """The ids a corpus may use: users and merchants with profiles, and ids without."""

    users: Sequence[int]
    merchants: Sequence[int]
    unknown_user: int  # this and the next ids have no profile
    unknown_merchant: int


def dumps(body: Body) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


def good_bodies(rng: random.Random, pop: Population, n: int, end: datetime) -> list[Body]:
    """``n`` valid transactions over the two hours before ``end``, in event-time order."""
    span_us = int(timedelta(hours=2).total_seconds() * 1e6)
    offsets = sorted(rng.randrange(span_us) for _ in range(n))
    bodies = []
    for i, off in enumerate(offsets):
        tid = f"fz-{i:06d}-{rng.getrandbits(32):08x}"
        if i % 7 == 3:
            # Valid unicode and JSON escapes in the id: scored like any other.
            tid += rng.choice(["-é", "-日本", "-😀", "-e\u0301", '-"q"', "-back\\slash", "-\t\n"])
        bodies.append(
            {
                "transaction_id": tid,
                "user_id": rng.choice(pop.users),
                "merchant_id": rng.choice(pop.merchants),
                "amount": round(rng.lognormvariate(3.5, 1.0), 2) or 0.01,
                "channel": rng.choice(CHANNELS),
                "country": rng.choice(["DE", "FR", "US", "GB", "ES"]),
                "event_timestamp": (end - timedelta(microseconds=span_us - off)).isoformat(),
            }
        )
    return bodies


# Values the schema rejects for each field: numbers must be JSON numbers ("5" and true are
# not, though pydantic's lax mode would read them as 5 and 1).
WRONG_TYPES: dict[str, list[Any]] = {
    "transaction_id": [123, None, ["a"], {"id": 1}, True, ""],
    "user_id": ["abc", None, [1], {"u": 1}, 1.5, "1e3x", "123", True],
    "merchant_id": ["m-1", None, [], 2.25, {"m": 2}, "7", False],
    "amount": ["lots", None, [10], {"v": 1}, "12,50", "1e3x", "12.5", True],
    "channel": [5, None, ["pos"], "POS", "card", True],
    "country": [49, None, ["DE"], "de", "DEU", "D"],
    "event_timestamp": ["yesterday", None, [2026], {"t": 1}, "2026-13-45T99:00:00Z", True],
}
HUGE: list[tuple[str, str]] = [  # (field, JSON literal)
    ("amount", "1e400"),
    ("amount", "-1e400"),
    ("amount", str(MAX_AMOUNT * 10)),
    ("amount", "1" + "0" * 400),
    ("user_id", str(2**64)),
    ("user_id", "1" + "0" * 4000),
    ("merchant_id", str(2**63)),
    ("merchant_id", "-1"),
    ("amount", "0"),
    ("amount", "-5"),
]
NON_FINITE = ["NaN", "Infinity", "-Infinity", "nan", "inf"]
BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]
LONE_SURROGATES = ["\\ud800", "\\udfff", "\\ud83d", "\\udc00x"]


def _with_literal(body: Body, field: str, literal: str | bytes) -> bytes:
    """``body`` with ``field`` set to raw JSON bytes that json.dumps would never write."""
    raw = literal.encode() if isinstance(literal, str) else literal
    marker = "\x00MARK\x00"
    return dumps(body | {field: marker}).replace(json.dumps(marker).encode(), raw)


def _truncated(rng: random.Random, body: Body) -> bytes:
    whole = dumps(body)
    return whole[: rng.randrange(1, len(whole))]


def _not_json(rng: random.Random, body: Body) -> bytes:
    return rng.choice(
        [
            b"",
            b"\xef\xbb\xbf" + dumps(body),  # a byte-order mark
            dumps(body).replace(b'"', b"'"),
            b"{" * 5000 + b"}" * 5000,
            b"[" * 100_000,
            bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200))) + b"\xff",
            b"transaction_id=1&user_id=2",
            dumps(body) + b" trailing",
            dumps(body) + dumps(body),
        ]
    )


def _wrong_type(rng: random.Random, body: Body) -> bytes:
    field = rng.choice(sorted(WRONG_TYPES))
    return dumps(body | {field: rng.choice(WRONG_TYPES[field])})


def _missing(rng: random.Random, body: Body) -> bytes:
    drop = set(rng.sample(sorted(body), rng.randrange(1, len(body) + 1)))
    return dumps({k: v for k, v in body.items() if k not in drop})


def _extra(rng: random.Random, body: Body) -> bytes:
    return dumps(body | {rng.choice(["is_fraud", "score", "__proto__", "userId"]): 1})


def _huge(rng: random.Random, body: Body) -> bytes:
    return _with_literal(body, *rng.choice(HUGE))


def _non_finite(rng: random.Random, body: Body) -> bytes:
    return _with_literal(body, "amount", rng.choice(NON_FINITE))


def _bad_utf8(rng: random.Random, body: Body) -> bytes:
    field = rng.choice(["transaction_id", "channel", "country"])
    return _with_literal(body, field, b'"' + rng.choice(BAD_UTF8) + b'"')


def _lone_surrogate(rng: random.Random, body: Body) -> bytes:
    literal = '"' + str(body["transaction_id"])[:8] + rng.choice(LONE_SURROGATES) + '"'
    return _with_literal(body, "transaction_id", literal)


def _bad_text(rng: random.Random, body: Body) -> bytes:
    """Valid unicode the schema rejects: patterns, enums, lengths."""
    field, value = rng.choice(
        [
            ("country", "ÄÖ"),
            ("country", "D\u0301E"),
            ("channel", "pøs"),
            ("channel", "pos\u200b"),
            ("transaction_id", "😀" * 65),
            ("event_timestamp", "\uff12\uff10\uff12\uff16-01-01T00:00:00Z"),  # fullwidth
        ]
    )
    return dumps(body | {field: value})


def _naive_time(rng: random.Random, body: Body) -> bytes:
    return dumps(body | {"event_timestamp": str(body["event_timestamp"])[:19]})


BadMaker = Callable[[random.Random, Body], bytes]
BAD: dict[str, tuple[BadMaker, frozenset[str]]] = {
    "truncated_json": (_truncated, frozenset({"bad_json"})),
    "not_json": (_not_json, frozenset({"bad_json", "schema"})),
    "wrong_type": (_wrong_type, frozenset({"schema"})),
    "missing_field": (_missing, frozenset({"schema"})),
    "extra_field": (_extra, frozenset({"schema"})),
    "huge_number": (_huge, frozenset({"schema", "bad_json"})),
    "nan_infinity": (_non_finite, frozenset({"schema", "bad_json"})),
    "invalid_utf8": (_bad_utf8, frozenset({"bad_json"})),
    "lone_surrogate": (_lone_surrogate, frozenset({"bad_json"})),
    "bad_unicode_text": (_bad_text, frozenset({"schema"})),
    "naive_timestamp": (_naive_time, frozenset({"schema"})),
}


def key_of(body: Body) -> bytes:
    """Keyed by user, as ``fraud-produce`` does: one user's events stay in order."""
    return str(body["user_id"]).encode()


def build(seed: int, pop: Population, good: int, bad_per_kind: int, end: datetime) -> list[Case]:
    """Good events in time order, with every bad kind, unknown entities and duplicate
    deliveries inserted at seeded positions."""
    rng = random.Random(seed)
    bodies = good_bodies(rng, pop, good, end)
    cases = [
        Case("good", key_of(b), dumps(b), frozenset({SCORE}), b["transaction_id"], b)
        for b in bodies
    ]
    out: list[Case] = []
    inserts: dict[int, list[Case]] = {}
    for kind, (make, expect) in BAD.items():
        for j in range(bad_per_kind):
            template = dict(rng.choice(bodies))
            template["transaction_id"] = f"bad-{kind}-{j}-{rng.getrandbits(32):08x}"
            key = rng.choice([key_of(template), None, b"\xff\xfe"])
            inserts.setdefault(rng.randrange(len(cases) + 1), []).append(
                Case(kind, key, make(rng, template), expect)
            )
    for j in range(bad_per_kind):
        # A good event's twin, of a user or merchant with no profile.
        at = rng.randrange(len(cases))
        base = dict(bodies[at])
        if j % 2:
            base |= {"user_id": pop.unknown_user + j}
        else:
            base |= {"merchant_id": pop.unknown_merchant + j}
        base["transaction_id"] = f"unknown-{j}-{rng.getrandbits(32):08x}"
        # One microsecond later, so a known user's event order (and the backfill's) is strict.
        ts = datetime.fromisoformat(base["event_timestamp"]) + timedelta(microseconds=1)
        base["event_timestamp"] = ts.isoformat()
        case = Case(
            "unknown_entity",
            key_of(base),
            dumps(base),
            frozenset({UNKNOWN}),
            base["transaction_id"],
            base,
        )
        inserts.setdefault(at + 1, []).append(case)
    for _ in range(bad_per_kind):
        # An exact re-delivery (a producer retry) right after the original.
        at = rng.randrange(len(cases))
        original = cases[at]
        dup = Case(
            "duplicate",
            original.key,
            original.value,
            frozenset({SCORE}),
            original.transaction_id,
            original.body,
        )
        inserts.setdefault(at + 1, []).insert(0, dup)  # before anything else inserted there
    for i, case in enumerate(cases):
        out += inserts.get(i, [])
        out.append(case)
    out += inserts.get(len(cases), [])
    return out


def padded(body: Body, size: int) -> bytes:
    """A well-formed JSON object of exactly ``size`` bytes that the schema rejects
    (an unknown field carries the padding)."""
    head = dumps(body | {"padding": ""})
    fill = size - len(head)
    if fill < 0:
        raise ValueError(f"size {size} is below the event's own {len(head)} bytes")
    return head[:-2] + b"x" * fill + head[-2:]
