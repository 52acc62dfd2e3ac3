"""Broken batch inputs (the day's transactions, entity files, feature sources): one clear
error, exit 2, and the day's existing partition left byte-identical."""

from __future__ import annotations

import pytest

from harness.report import table
from tests.conftest import Stack
from verify import fuzz_batch

pytestmark = pytest.mark.integration


def test_bad_batch_inputs_fail_clearly_and_leave_the_output_untouched(trained: Stack) -> None:
    checks = fuzz_batch.run(trained.settings, budget=len(fuzz_batch.CASES), rows=300)
    assert len(checks) == len(fuzz_batch.CASES) == 20 and all(c.ok for c in checks), table(checks)
