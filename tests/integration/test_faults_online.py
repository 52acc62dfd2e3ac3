"""The online service under faults, with real processes: Redis killed or stalled, 2x overload.

Small budgets here; `python -m verify.faults_online` runs the same code for 30 s with the
real bounds.
"""

from __future__ import annotations

import pytest

from core.settings import Settings
from harness.report import table
from tests.conftest import Stack
from verify.faults_online import overload, redis_outage

pytestmark = pytest.mark.integration


def test_redis_killed_or_stalled_under_load_gives_fast_503s_then_the_same_answers(
    ready: Stack,
) -> None:
    # The stack's 2 s read bound is for a loaded CI box; a stall must show the bound at work.
    settings = Settings(**(ready.settings.model_dump() | {"redis_timeout_ms": 250}))
    checks = redis_outage(settings, budget_s=10.0, rate=100.0, margin_s=0.25, recovery_bound_s=5.0)
    assert all(c.ok for c in checks), table(checks)


def test_twice_capacity_is_shed_without_errors_or_leaks_then_recovers(ready: Stack) -> None:
    checks = overload(
        ready.settings, budget_s=5.0, capacity_s=2.0, latency_bound_s=8.0, min_goodput=0.05
    )
    assert all(c.ok for c in checks), table(checks)
