"""Property-based fuzzing of the HTTP API against its own OpenAPI document (schemathesis).

A fixed seed and 30 examples per operation and mode here; `python -m verify.fuzz_api`
runs the same code with 1000.
"""

from __future__ import annotations

import pytest

from harness.report import table
from tests.conftest import Stack
from verify.fuzz_api import run

pytestmark = pytest.mark.integration


def test_fuzzed_requests_get_no_server_error_and_conform_to_the_schema(ready: Stack) -> None:
    details: list[str] = []
    checks = run(ready.settings, examples=30, details=details)
    assert all(c.ok for c in checks), "\n\n".join([table(checks), *details])
