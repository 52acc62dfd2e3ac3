"""The champion's artifact dir for tests and proofs that read or copy the files themselves."""

from __future__ import annotations

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
