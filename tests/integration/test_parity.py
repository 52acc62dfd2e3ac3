"""Parity: batch, stream, API and a brute-force reference give one vector and one score."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.models import champion_dir
from harness.report import table
from tests.conftest import Stack
from verify.parity import Budget, measure

pytestmark = pytest.mark.integration


def test_four_modes_score_the_sample_alike(ready: Stack, tmp_path: Path) -> None:
    """A few hundred events of 150 users, through the real job, broker, stream and API."""
    budget = Budget(
        source=ready.settings.data_dir,
        model_dir=champion_dir(ready.settings),
        redis_url=ready.settings.redis_connection_string,
        root=tmp_path,
        users=150,
    )
    outcome = measure(budget)
    shown = table(outcome.checks)
    assert all(c.ok for c in outcome.checks), shown
    modes = outcome.details["modes"]
    assert [m["mode"] for m in modes] == ["batch", "stream", "online API"]
    assert outcome.details["conditions"]["sample_transactions"] >= 100, shown
    assert outcome.details["conditions"]["rounds"] >= 2, shown  # users with several events
    for mode in modes:
        # Lined-up inputs leave no mismatch class on this data: every vector equals the reference.
        assert mode["share_equal"] == 1.0, (mode["mode"], mode["mismatches"][:5])
