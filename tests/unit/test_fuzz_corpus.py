"""The malformed-event corpus: seeded, and its expectations agree with the stream's parser."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

from streaming.records import DeadLetter, Raw, parse
from verify.fuzz_corpus import BAD, SCORE, UNKNOWN, Population, build, padded

POP = Population(
    users=range(100, 130), merchants=range(500), unknown_user=10**9, unknown_merchant=10**10
)
END = datetime(2026, 11, 28, 12, tzinfo=timezone.utc)
INGEST_MS = END.timestamp() * 1000  # when the corpus entered the log


def test_the_same_seed_gives_the_same_corpus() -> None:
    assert build(3, POP, 200, 5, END) == build(3, POP, 200, 5, END)
    assert build(3, POP, 200, 5, END) != build(4, POP, 200, 5, END)


def test_every_kind_is_present_and_each_expectation_matches_the_parser() -> None:
    for seed in range(5):
        cases = build(seed, POP, 300, 20, END)
        assert set(Counter(c.kind for c in cases)) == {*BAD, "good", "unknown_entity", "duplicate"}
        for case in cases:
            # The corpus is malformed under the strict contract (STREAM_EXTRA_FIELDS=dead_letter).
            got = parse(Raw(case.key, case.value, INGEST_MS), "dead_letter")
            reason = got.reason if isinstance(got, DeadLetter) else SCORE
            # Unknown entities parse; the runtime's profile lookup routes them.
            want = {SCORE} if case.expect == {UNKNOWN} else case.expect
            assert reason in want, (case.kind, reason, case.value[:120])


def test_good_events_of_a_user_are_in_time_order_and_duplicates_follow_their_original() -> None:
    cases = build(1, POP, 300, 10, END)
    last: dict[int, str] = {}
    last_value: dict[int, bytes] = {}
    for case in cases:
        if case.body is None:
            continue
        user = case.body["user_id"]
        if case.kind == "duplicate":  # right after the original, before its user moves on
            assert last_value[user] == case.value
            continue
        assert last.get(user, "") <= case.body["event_timestamp"]
        last[user], last_value[user] = case.body["event_timestamp"], case.value


def test_padding_gives_the_exact_size_and_a_schema_error() -> None:
    body = build(1, POP, 1, 0, END)[0].body
    assert body is not None
    value = padded(body, 50_000)
    assert len(value) == 50_000
    got = parse(Raw(None, value, INGEST_MS), "dead_letter")  # the padding is an unknown field
    assert isinstance(got, DeadLetter) and got.reason == "schema"
