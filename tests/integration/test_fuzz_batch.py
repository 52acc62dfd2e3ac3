"""Broken batch inputs (the day's transactions, entity files, feature sources): one clear
error, exit 2, and the day's existing partition left byte-identical."""

from __future__ import annotations

import pytest

from tests.conftest import Stack
from verify import fuzz_batch
from verify.report import table

pytestmark = pytest.mark.integration


def test_bad_batch_inputs_fail_clearly_and_leave_the_output_untouched(trained: Stack) -> None:
    # The first 12 cases cover every input (round-robin) and each kind of fault.
    checks = fuzz_batch.run(trained.settings, budget=12, rows=300)
    assert len(checks) == 12 and all(c.ok for c in checks), table(checks)
