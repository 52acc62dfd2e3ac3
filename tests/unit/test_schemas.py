"""The published JSON Schemas are current and say what the code does; the stream's
unknown-field policy (ignore and count, or dead-letter) and its dead-letter headers."""

from __future__ import annotations

import json
from typing import Any

import jsonschema_rs
import pytest

from core.events import ScoreRecord, Transaction
from harness.kafka import SAMPLE_EVENT
from scripts.schemas import MODELS, path, rendered, stale
from streaming.dataflow import dead_letter_message
from streaming.records import DeadLetter, Event, Raw, parse
from streaming.runtime import score_json

EVENT = SAMPLE_EVENT
INGEST_MS = 1_800_000_000_000  # after the event


def raw(body: dict[str, Any], source: tuple[str, int, int] | None = None) -> Raw:
    return Raw(b"1", json.dumps(body).encode(), INGEST_MS, source)


def validator(name: str) -> jsonschema_rs.Validator:
    return jsonschema_rs.validator_for(json.loads(path(name).read_text()))


def test_committed_schemas_are_current() -> None:
    assert len(MODELS) == 2
    assert stale() == [], "run `make schemas` and commit schemas/"
    for name in MODELS:
        assert path(name).read_text() == rendered(name)


def test_a_score_message_of_the_stream_fits_its_schema() -> None:
    reasons = '[{"feature":"amount","contribution":0.5}]'
    shadow = ',"challenger_version":"m-2","challenger_score":0.75,"challenger_decision":"review"'
    when = "2026-01-01T00:00:00+00:00"
    body = json.loads(score_json("t1", 1, 0.25, "m-1", when, 3.5, "approve", reasons))
    assert validator("score").is_valid(body)
    assert ScoreRecord.model_validate(body).score == 0.25
    both = json.loads(score_json("t1", 1, 0.25, "m-1", when, 3.5, "approve", reasons, shadow))
    assert validator("score").is_valid(both)
    assert ScoreRecord.model_validate(both).challenger_decision == "review"
    assert not validator("score").is_valid(body | {"decision": "maybe"})
    assert not validator("score").is_valid(body | {"score": 1.5})


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        (EVENT, True),
        (EVENT | {"merchant_category": "5411"}, True),  # unknown: allowed, ignored
        (EVENT | {"country": "nl"}, False),
        (EVENT | {"user_id": "1"}, False),
        (EVENT | {"channel": "fax"}, False),
        ({k: v for k, v in EVENT.items() if k != "amount"}, False),
    ],
)
def test_the_event_schema_and_the_model_agree(body: dict[str, Any], valid: bool) -> None:
    assert validator("transaction").is_valid(body) is valid
    assert isinstance(parse(raw(body)), Event) is valid
    try:
        Transaction.model_validate_json(json.dumps(body))
        assert valid
    except ValueError:
        assert not valid


def test_unknown_fields_are_ignored_and_counted_or_dead_lettered() -> None:
    body = EVENT | {"merchant_category": "5411", "is_fraud": 1}
    event = parse(raw(body))
    assert isinstance(event, Event) and event.extra_fields == 2
    assert event.txn.model_dump() == parse(raw(EVENT)).txn.model_dump()  # type: ignore[union-attr]
    assert parse(raw(EVENT)).extra_fields == 0  # type: ignore[union-attr]
    strict = parse(raw(body), "dead_letter")
    assert isinstance(strict, DeadLetter) and strict.reason == "schema"
    assert strict.detail.startswith(("merchant_category", "is_fraud"))
    # A real problem beside an unknown field is named, not the unknown field.
    both = parse(raw(body | {"amount": -1}))
    assert isinstance(both, DeadLetter) and both.detail.startswith("amount")


def test_dead_letters_carry_their_source() -> None:
    letter = DeadLetter(raw(EVENT | {"amount": -1}, ("transactions", 3, 1234)), "schema", "amount")
    headers = dict(dead_letter_message(letter, "dlq").headers)
    assert headers["source_topic"] == b"transactions"
    assert headers["source_partition"] == b"3"
    assert headers["source_offset"] == b"1234"
    assert headers["source_timestamp"] == str(INGEST_MS).encode()
    replayed = DeadLetter(raw(EVENT), "schema", "x")  # from a file: no Kafka position
    assert "source_topic" not in dict(dead_letter_message(replayed, "dlq").headers)
