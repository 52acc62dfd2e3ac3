"""Bad input gets a one-line error and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT

pytestmark = pytest.mark.integration


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        env=os.environ | (env or {}),
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize("module", ["datagen", "batch", "training", "devservices"])
def test_unknown_option(module: str) -> None:
    assert_one_line_error(run("-m", module, "--no-such-option"), "error")


def test_missing_data_file(tmp_path: Path) -> None:
    repo = tmp_path / "feature_repo"
    repo.mkdir()
    out = run("-m", "batch", "aggregates", env={"FEATURE_REPO": str(repo)})
    assert_one_line_error(out, "missing file", "transactions.parquet")


def test_missing_feature_repo(tmp_path: Path) -> None:
    out = run("-m", "training", env={"FEATURE_REPO": str(tmp_path / "nowhere")})
    assert_one_line_error(out, "feature_store.yaml")


def test_unreachable_redis(services: object) -> None:
    out = run(
        "-m",
        "devservices",
        "check",
        "--only",
        "redis",
        env={"REDIS_CONNECTION_STRING": "127.0.0.1:1"},
    )
    assert_one_line_error(out, "redis", "127.0.0.1:1")


def test_unreachable_kafka(services: object) -> None:
    out = run(
        "-m",
        "devservices",
        "check",
        "--only",
        "kafka",
        env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:2"},
    )
    assert_one_line_error(out, "kafka", "127.0.0.1:2")
