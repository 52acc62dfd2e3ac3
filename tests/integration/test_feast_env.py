"""The feast CLI in a copy of feature_repo/ with feature_store.yaml's variables unset: one
line naming the variable (before: ``KeyError: 'port'`` after a traceback, or pydantic's
multi-line error for ``REDIS_TYPE``).

The feast executable once (importing Feast costs ~8 s of CPU); every command through the same
click group in process, where an exception other than click's one-line error is re-raised."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from feast.cli.cli import cli

from core.store import copy_feature_repo
from harness.workspace import feast_cli
from tests.integration.test_cli_errors import assert_one_line_error

pytestmark = pytest.mark.integration

VARIABLES = ("REDIS_CONNECTION_STRING", "REDIS_TYPE")
SET = {"REDIS_CONNECTION_STRING": "localhost:6379", "REDIS_TYPE": "redis"}

# Commands that reach the online store, the registry, the feature server, or only the config.
COMMANDS = (
    ["apply"],
    ["plan"],
    ["materialize", "2026-11-01T00:00:00", "2026-11-02T00:00:00"],
    ["materialize-incremental", "2026-11-02T00:00:00"],
    ["serve", "--port", "0"],
    ["feature-views", "list"],
    ["teardown"],
)


def feast_in_process(repo: Path, args: list[str], unset: tuple[str, ...]) -> Result:
    env: dict[str, str | None] = {**SET, **dict.fromkeys(unset)}  # None unsets
    return CliRunner(env=env).invoke(cli, ["--chdir", str(repo), *args], catch_exceptions=False)


def assert_one_line(result: Result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_the_feast_executable_names_an_unset_connection_string_in_one_line(
    tmp_path: Path,
) -> None:
    repo = copy_feature_repo(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES} | {"REDIS_TYPE": "redis"}
    out = subprocess.run(
        [feast_cli(), "materialize-incremental", "2026-11-02T00:00:00"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_one_line_error(out, "REDIS_CONNECTION_STRING", "export it")
    assert "REDIS_TYPE" not in out.stderr


def test_every_feast_command_names_each_unset_variable_in_one_line(tmp_path: Path) -> None:
    repo = copy_feature_repo(tmp_path)
    for args in COMMANDS:
        assert_one_line(feast_in_process(repo, args, VARIABLES), *VARIABLES, "export it")
    assert len(COMMANDS) == 7
    assert not (tmp_path / "data" / "registry.db").exists(), "nothing registered"


@pytest.mark.parametrize("unset", VARIABLES)
def test_only_the_unset_variable_is_named(tmp_path: Path, unset: str) -> None:
    repo = copy_feature_repo(tmp_path)
    result = feast_in_process(repo, ["materialize-incremental", "2026-11-02T00:00:00"], (unset,))
    assert_one_line(result, unset, "export it")
    assert [name for name in VARIABLES if name in result.stderr] == [unset]
