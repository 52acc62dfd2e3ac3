"""Opening the Feast store the same way in every mode."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from feast import FeatureService, FeatureStore

from core.cli import UserError
from core.contract import FEATURE_SERVICE_NAME
from core.settings import PROJECT_ROOT, Settings


@contextmanager
def _feast_env(settings: Settings) -> Iterator[None]:
    """``feature_store.yaml`` reads ``${REDIS_CONNECTION_STRING}`` and ``${REDIS_TYPE}``, which
    Feast substitutes from the environment while it loads the config. Set them for that moment
    only: leaving them set made a later ``Settings()`` in the same process read another store."""
    wanted = {
        "REDIS_CONNECTION_STRING": settings.redis_connection_string,
        "REDIS_TYPE": settings.redis_type,
    }
    before = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def open_store(settings: Settings) -> FeatureStore:
    """A FeatureStore over ``settings.feature_repo``, on the Redis that ``settings`` name."""
    if not (settings.feature_repo / "feature_store.yaml").exists():
        raise UserError(f"no feature_store.yaml in {settings.feature_repo}; set FEATURE_REPO")
    with _feast_env(settings):
        return FeatureStore(repo_path=str(settings.feature_repo))


def feature_service(store: FeatureStore) -> FeatureService:
    try:
        return store.get_feature_service(FEATURE_SERVICE_NAME)
    except Exception as exc:  # Feast raises several registry errors for an unapplied repo
        raise UserError(
            f"FeatureService {FEATURE_SERVICE_NAME} not in the registry ({exc.__class__.__name__});"
            " run `feast apply` in feature_repo/"
        ) from exc


def copy_feature_repo(root: Path) -> Path:
    """A feature repo of its own under ``root``; its sources read ``root/data``.

    Tests and benchmarks work on such copies so the demo's data and registry stay untouched.
    """
    repo = root / "feature_repo"
    shutil.copytree(
        PROJECT_ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__")
    )
    return repo
