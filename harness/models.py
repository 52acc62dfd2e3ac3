"""The champion's artifact dir for tests and proofs that read or copy the files themselves."""

from __future__ import annotations

import sys
from pathlib import Path

from core.cli import UserError
from core.settings import Settings
from registry.store import CHAMPION, Registry


def champion_dir(settings: Settings) -> Path:
    """``MODEL_DIR`` if set, else the registry champion's downloaded (cached) dir."""
    if settings.model_dir is not None:
        return settings.model_dir
    registry = Registry(settings)
    version = registry.aliases().get(CHAMPION)
    if version is None:
        raise UserError(f"no champion in {registry.describe()}; run `python -m training`")
    return registry.fetch(version)


def champion_dir_or_exit(settings: Settings) -> Path:
    """``champion_dir``, or exit 2 with its one-line reason (proof and benchmark entry points)."""
    try:
        return champion_dir(settings)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def private_registry(settings: Settings, workdir: Path) -> Settings:
    """``settings`` on an MLflow registry of their own under ``workdir`` (never MODEL_DIR), so a
    test's promotions never move the session's champion."""
    return settings.model_copy(
        update={
            "model_dir": None,
            "mlflow_tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}",
            "mlflow_artifact_location": (workdir / "mlartifacts").as_uri(),
            "model_cache_dir": workdir / "model-cache",
        }
    )


def registry_env(settings: Settings) -> dict[str, str]:
    """The environment a process (CLI, API, stream, batch) needs to use ``settings``' registry."""
    env = {
        "MODEL_NAME": settings.model_name,
        "MODEL_RELOAD_INTERVAL_S": f"{settings.model_reload_interval_s:g}",
    }
    for name in ("mlflow_tracking_uri", "mlflow_artifact_location", "model_cache_dir"):
        value = getattr(settings, name)
        if value is not None:
            env[name.upper()] = str(value)
    return env
