"""The feast CLI in a copy of feature_repo/ with feature_store.yaml's variables unset: one
line naming the variable (before: ``KeyError: 'port'`` after a traceback)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from core.store import copy_feature_repo
from harness.workspace import feast_cli
from tests.integration.test_cli_errors import assert_one_line_error

pytestmark = pytest.mark.integration


def test_feast_apply_without_the_connection_string_is_one_line(tmp_path: Path) -> None:
    repo = copy_feature_repo(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_CONNECTION_STRING"}
    out = subprocess.run(
        [feast_cli(), "apply"],
        cwd=repo,
        env=env | {"REDIS_TYPE": "redis"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_one_line_error(out, "REDIS_CONNECTION_STRING", "export it")
    assert not (tmp_path / "data" / "registry.db").exists(), "nothing registered"
