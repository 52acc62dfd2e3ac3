"""The batch job SIGKILLed mid-run, on a new day and over a published one, then re-run:
the day holds nothing or a whole partition at every moment, and each transaction once."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.report import table
from tests.conftest import Stack
from verify.faults_batch import run

pytestmark = pytest.mark.integration


def test_batch_sigkill_then_rerun_leaves_whole_partitions_without_duplicates(
    trained: Stack, tmp_path: Path
) -> None:
    checks = run(trained.settings, tmp_path, budget=600, chunks=10)
    assert all(c.ok for c in checks), "\n" + table(checks)
