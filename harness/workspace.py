"""The one workspace builder: a copy of feature_repo/ with its own data and Redis database,
used by the tests' session fixture, the benchmarks and the parity proof.

A workspace never touches the demo's data, registry or online store; its ``env`` is what the
CLIs (``feast``, ``python -m ...``) need to work on it as a user would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from batch.aggregates import backfill_windows
from core.redis_url import with_db
from core.settings import PROJECT_ROOT, Settings
from core.store import copy_feature_repo
from datagen.generate import DataFiles, GeneratorConfig, generate
from harness.report import RESULTS_DIR


def feast_cli() -> str:
    """The ``feast`` command of this interpreter's environment."""
    return str(Path(sys.executable).with_name("feast"))


def stamp(t: datetime) -> str:
    """A time as ``feast materialize`` takes it."""
    return f"{t:%Y-%m-%dT%H:%M:%S}"


@dataclass(frozen=True)
class Workspace:
    """A feature repo copy wired to one Redis database, plus the env its CLIs need."""

    settings: Settings
    env: dict[str, str]

    @property
    def repo(self) -> Path:
        return self.settings.feature_repo

    def settings_with(self, **overrides: Any) -> Settings:
        """This workspace's settings with ``overrides`` (Settings fields) applied."""
        return Settings(**(self.settings.model_dump() | overrides))

    def run(
        self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command as a user would, with this workspace's environment (plus ``env``)."""
        return subprocess.run(
            list(args),
            cwd=cwd or self.repo,
            env=self.env | (env or {}),
            capture_output=True,
            text=True,
            timeout=600,
        )

    def python(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, *args, cwd=PROJECT_ROOT, env=env)

    def feast(self, *args: str) -> None:
        """``feast ARGS`` in the repo; RuntimeError with its stderr if it fails."""
        out = self.run(feast_cli(), *args)
        if out.returncode != 0:
            raise RuntimeError(f"feast {args[0]} failed: {out.stderr[-2000:]}")

    def materialize(self, start: datetime, end: datetime, *views: str) -> None:
        """``feast materialize [-v VIEW ...] START END``."""
        flags = [arg for view in views for arg in ("-v", view)]
        self.feast("materialize", *flags, stamp(start), stamp(end))


def create(root: Path, redis_url: str, **overrides: Any) -> Workspace:
    """A fresh feature repo copy under ``root`` on ``redis_url``; ``overrides`` are Settings."""
    shutil.rmtree(root, ignore_errors=True)
    copy_feature_repo(root)
    settings = Settings(
        feature_repo=root / "feature_repo", redis_connection_string=redis_url, **overrides
    )
    env = os.environ | {
        "FEATURE_REPO": str(settings.feature_repo),
        "REDIS_CONNECTION_STRING": redis_url,
        "REDIS_TYPE": settings.redis_type,
        "REDIS_TIMEOUT_MS": f"{settings.redis_timeout_ms:g}",
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
    }
    if settings.model_dir is not None:
        env["MODEL_DIR"] = str(settings.model_dir)
    return Workspace(settings, env)


def set_project(ws: Workspace, project: str) -> None:
    """Give the workspace's repo a Feast project of its own. Redis keys carry the project, so
    the workspace shares a database (on a Redis Cluster, the only one) without touching
    anyone else's keys."""
    yaml = ws.repo / "feature_store.yaml"
    text, found = re.subn(r"^project: \w+$", f"project: {project}", yaml.read_text(), flags=re.M)
    if found != 1:
        raise RuntimeError(f"expected one `project:` line in {yaml}, found {found}")
    yaml.write_text(text)


def own_db(settings: Settings, db: int) -> str:
    """``settings``' Redis on database ``db``, apart from the demo's. A Redis Cluster has only
    db 0, so there it is shared: the callers' keys are their own users' or Feast project's."""
    if settings.redis_type == "redis_cluster":
        return settings.redis_connection_string
    return with_db(settings.redis_connection_string, db)


def generate_data(ws: Workspace, cfg: GeneratorConfig) -> DataFiles:
    """Synthetic data in the workspace, with the window aggregates backfilled."""
    files = generate(cfg, ws.settings.data_dir)
    backfill_windows(files.transactions, ws.settings.data_dir / "user_txn_windows.parquet")
    return files


def prepare(name: str, cfg: GeneratorConfig, redis_db: int) -> Workspace:
    """A benchmark's workspace under bench/results/: generate, backfill, `feast apply` and
    `feast materialize`; prints how long each took."""
    base = Settings()
    ws = create(
        RESULTS_DIR / f"{name}-workspace", own_db(base, redis_db), redis_type=base.redis_type
    )
    t = time.perf_counter()
    generate_data(ws, cfg)
    print(f"  data: {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    ws.feast("apply")
    ws.materialize(cfg.first_day() - timedelta(days=1), datetime.now(timezone.utc))
    print(f"  feast apply + materialize: {time.perf_counter() - t:.1f} s", flush=True)
    return ws
