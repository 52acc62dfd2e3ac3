"""The online service under faults, with real processes: Redis SIGKILLed, and 2x overload.

Small budgets here, and latency bounds that only catch a hang (no test asserts a wall
time); `python -m verify.faults_online` runs the same code for 30 s with the real bounds.
"""

from __future__ import annotations

import pytest

from tests.conftest import Stack
from verify.faults_online import overload, redis_outage
from verify.report import table

pytestmark = pytest.mark.integration


def test_redis_killed_under_load_gives_503s_only_and_no_wrong_answer(ready: Stack) -> None:
    checks = redis_outage(
        ready.settings, budget_s=6.0, rate=100.0, latency_bound_s=3.0, recovery_bound_s=10.0
    )
    assert all(c.ok for c in checks), table(checks)


def test_twice_capacity_is_shed_without_errors_or_leaks_then_recovers(ready: Stack) -> None:
    checks = overload(
        ready.settings, budget_s=5.0, capacity_s=2.0, latency_bound_s=8.0, min_goodput=0.05
    )
    assert all(c.ok for c in checks), table(checks)
