"""A benchmark's own Feast repo: a copy of feature_repo/ with generated data beside it.

Benchmarks never touch the demo's data or Redis database: each gets a workspace under
bench/results/ and a Redis database number of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from batch.aggregates import backfill_windows
from core.redis_url import with_db
from core.settings import PROJECT_ROOT, Settings
from core.store import copy_feature_repo
from datagen.generate import GeneratorConfig, generate

RESULTS = PROJECT_ROOT / "bench" / "results"


@dataclass(frozen=True)
class Workspace:
    settings: Settings
    env: dict[str, str]

    def feast(self, *args: str) -> None:
        feast = str(Path(sys.executable).with_name("feast"))
        subprocess.run([feast, *args], cwd=self.settings.feature_repo, env=self.env, check=True)


def prepare(name: str, cfg: GeneratorConfig, redis_db: int) -> Workspace:
    """Generate, backfill, `feast apply` and `feast materialize`; print how long each took."""
    root = RESULTS / f"{name}-workspace"
    shutil.rmtree(root, ignore_errors=True)
    copy_feature_repo(root)
    base = Settings()
    redis_url = with_db(base.redis_connection_string, redis_db)
    settings = Settings(feature_repo=root / "feature_repo", redis_connection_string=redis_url)
    env = os.environ | {
        "FEATURE_REPO": str(settings.feature_repo),
        "REDIS_CONNECTION_STRING": redis_url,
    }
    ws = Workspace(settings, env)
    t = time.perf_counter()
    files = generate(cfg, settings.data_dir)
    backfill_windows(files.transactions, settings.data_dir / "user_txn_windows.parquet")
    print(f"  data: {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    ws.feast("apply")
    start = cfg.first_day() - timedelta(days=1)
    end = datetime.now(timezone.utc)
    ws.feast("materialize", f"{start:%Y-%m-%dT%H:%M:%S}", f"{end:%Y-%m-%dT%H:%M:%S}")
    print(f"  feast apply + materialize: {time.perf_counter() - t:.1f} s", flush=True)
    return ws
