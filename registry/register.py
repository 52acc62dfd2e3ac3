"""Training's side of the registry: every trained artifact becomes a new version, with its
metrics, report and lineage; the first version ever becomes the champion."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.cli import package_version
from core.settings import PROJECT_ROOT, Settings
from registry.store import CHAMPION, Registry, version_name


@dataclass(frozen=True)
class Registered:
    name: str  # fraud-detector/3, as every mode reports it
    version: str
    champion: str  # the champion's version after registering
    uri: str

    @property
    def is_champion(self) -> bool:
        return self.champion == self.version


def code_version() -> str:
    """``git describe`` of a source checkout, else the installed package's version."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        out = None
    if out is not None and out.returncode == 0 and out.stdout.strip():
        return f"git:{out.stdout.strip()}"
    return f"fraud-scoring=={package_version()}"


def lineage(manifest: dict[str, Any]) -> dict[str, str]:
    """Version tags: what the model was trained on and by which code."""
    return {
        "feature_service": manifest["feature_service"],
        "training_data_start": manifest["training_window"]["start"],
        "training_data_end": manifest["holdout_window"]["end"],
        "holdout_start": manifest["holdout_window"]["start"],
        "code_version": code_version(),
        "artifact_version": manifest["model_version"],
        "checksum": manifest["checksum"],
    }


def register_trained(
    settings: Settings, model_dir: Path, manifest: dict[str, Any], params: dict[str, Any]
) -> Registered:
    """Register ``model_dir`` as a new version; never touches earlier versions."""
    registry = Registry(settings)
    metrics = {
        key: float(value)
        for key, value in manifest["metrics"].items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    run_params = params | {
        "features": len(manifest["features"]),
        "train_rows": manifest["rows"]["train"],
        "holdout_rows": manifest["rows"]["holdout"],
    }
    for key in ("review_at", "decline_at"):  # the decision bands (training.evaluate)
        if key in manifest.get("decision", {}):
            run_params[key] = manifest["decision"][key]
    version = registry.register(model_dir, metrics, run_params, lineage(manifest))
    champion = registry.aliases().get(CHAMPION)
    if champion is None:  # the first version ever: nothing else could serve
        registry.set_champion(version)
        champion = version
    return Registered(version_name(registry.name, version), version, champion, registry.uri)
