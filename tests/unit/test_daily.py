"""The daily chain's schedule arithmetic (``fraud-batch daily --at HH:MM``)."""

from __future__ import annotations

import argparse
from datetime import datetime, time, timezone

import pytest

from batch.daily import clock_time, seconds_until

UTC = timezone.utc


@pytest.mark.parametrize(
    ("now", "wait"),
    [
        (datetime(2026, 1, 1, 2, 0, tzinfo=UTC), 15 * 60),
        (datetime(2026, 1, 1, 2, 15, tzinfo=UTC), 24 * 3600),  # just ran: tomorrow
        (datetime(2026, 1, 1, 23, 15, tzinfo=UTC), 3 * 3600),
        (datetime(2026, 12, 31, 3, 0, tzinfo=UTC), 23 * 3600 + 15 * 60),  # across a year
    ],
)
def test_the_next_run_is_the_next_time_of_day(now: datetime, wait: int) -> None:
    assert seconds_until(now, time(2, 15)) == wait


def test_a_time_of_day_is_hh_mm() -> None:
    assert clock_time("02:15") == time(2, 15)
    for bad in ("2:15pm", "25:00", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            clock_time(bad)
