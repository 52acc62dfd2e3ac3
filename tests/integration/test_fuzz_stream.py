"""A seeded malformed-event corpus through the real broker and the streaming dataflow."""

from __future__ import annotations

import pytest

from harness.report import Check, table
from tests.conftest import Stack
from verify import fuzz_stream

pytestmark = pytest.mark.integration

# (case prefix, measure prefix) of the checks each promise, or each known bug, covers.
DUPLICATES = (("duplicates", ""),)
NEAR_LIMIT = (("oversized, 512 B under", ""),)
ESCAPED_IDS = (("scores", "valid JSON"),)
FAR_FUTURE = (("far-future", ""),)
KNOWN = NEAR_LIMIT + ESCAPED_IDS + FAR_FUTURE


def matching(
    checks: list[Check], which: tuple[tuple[str, str], ...], count: int | None = None
) -> list[Check]:
    """The checks ``which`` names; with ``count``, assert that many ran (an all() over none
    would pass)."""
    found = [
        c for c in checks if any(c.case.startswith(a) and c.measure.startswith(b) for a, b in which)
    ]
    assert count is None or len(found) == count, f"{len(found)} checks, want {count}"
    return found


@pytest.fixture(scope="module")
def checks(ready: Stack) -> list[Check]:
    return fuzz_stream.run(ready.settings, budget=240, seed=6)


def test_bad_events_are_dead_lettered_and_good_events_scored(checks: list[Check]) -> None:
    rest = [c for c in checks if c not in matching(checks, KNOWN, 2 + 2 + 1)]
    assert len(rest) >= 25 and all(c.ok for c in rest), table(checks)


def test_a_redelivered_transaction_is_scored_again_alike_and_counted_once(
    checks: list[Check],
) -> None:
    # Per policy run: a score per delivery, the same score, windows counting it once.
    assert all(c.ok for c in matching(checks, DUPLICATES, 2 * 3)), table(checks)


def test_a_message_just_under_the_size_limit_is_dead_lettered(checks: list[Check]) -> None:
    assert all(c.ok for c in matching(checks, NEAR_LIMIT, 2)), table(checks)


def test_score_messages_are_json_whatever_the_transaction_id(checks: list[Check]) -> None:
    assert all(c.ok for c in matching(checks, ESCAPED_IDS, 2)), table(checks)


def test_a_far_future_event_does_not_poison_its_user(checks: list[Check]) -> None:
    assert all(c.ok for c in matching(checks, FAR_FUTURE, 1)), table(checks)
