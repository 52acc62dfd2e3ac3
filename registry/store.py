"""MLflow's Model Registry as this project uses it: the one place that talks to MLflow.

A trained artifact (model.joblib, manifest.json, metrics.json, report.png) is logged to a run
and registered as a new version of ``MODEL_NAME``; the alias ``champion`` serves and
``challenger`` is shadow-scored. ``mlflow`` is imported on first use, never at module import,
so the scoring modes import this module for free and resolve aliases off their hot paths.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.cli import UserError
from core.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_TAG = "champion_history"  # registered-model tag: champions in promotion order
HISTORY_KEEP = 50  # a tag value is bounded (5000 chars); the last 50 promotions are plenty
ARTIFACT_PATH = "model"  # the artifact dir inside the run


def tracking_uri(settings: Settings) -> str:
    return settings.mlflow_tracking_uri or f"sqlite:///{settings.data_dir / 'mlflow.db'}"


def artifact_location(settings: Settings) -> str | None:
    """Under the data dir with the embedded default; a server keeps its own artifact root."""
    if settings.mlflow_artifact_location:
        return settings.mlflow_artifact_location
    if settings.mlflow_tracking_uri is None:
        return (settings.data_dir / "mlartifacts").as_uri()
    return None


def version_name(model: str, version: str | int) -> str:
    """The version every mode reports: ``fraud-detector/3``."""
    return f"{model}/{version}"


def _quiet_mlflow() -> None:
    """MLflow logs its database migrations at INFO and draws a download progress bar; a
    user's own settings of these variables win."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # 7 retries with backoff would stall a CLI for minutes on a dead tracking server.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    # MLflow 3.17's store trips SQLAlchemy 2's deprecation of noload on every first use.
    warnings.filterwarnings("ignore", message="The ``noload`` loader strategy")


def mlflow_error(exc: Exception) -> str | None:
    """MLflow's error code, or None if ``exc`` is not MLflow's."""
    code = getattr(exc, "error_code", None)
    return str(code) if code is not None else None


@dataclass(frozen=True)
class Version:
    """One registered version, as ``list`` shows it."""

    version: str
    aliases: list[str]
    tags: dict[str, str]
    run_id: str | None
    created_ms: int
    metrics: dict[str, float]


class Registry:
    """One registered model in one MLflow registry (``MLFLOW_TRACKING_URI``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.model_name
        self.uri = tracking_uri(settings)
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            _quiet_mlflow()
            from mlflow import MlflowClient  # 2-4 s: on first use, never at import

            if self.uri.startswith("sqlite:///"):
                self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._client

    def describe(self) -> str:
        return f"{self.name} in {self.uri}"

    # --- reading ----------------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        """alias -> version; empty when the model was never registered."""
        try:
            model = self.client.get_registered_model(self.name)
        except Exception as exc:
            if mlflow_error(exc) == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise
        return {alias: str(version) for alias, version in model.aliases.items()}

    def model_version(self, version: str) -> ModelVersion:
        """The version, or a one-line UserError naming what exists."""
        if not version.isdigit():
            raise UserError(f"version must be a number such as 3, not {version!r}")
        try:
            return self.client.get_model_version(self.name, version)
        except Exception as exc:
            if mlflow_error(exc) in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                known = ", ".join(v.version for v in self.versions()) or "none"
                raise UserError(
                    f"no version {version} of {self.describe()} (versions: {known})"
                ) from None
            raise

    def versions(self) -> list[Version]:
        """Every version, newest first, with its run's metrics."""
        found = self.client.search_model_versions(f"name = '{self.name}'")
        aliases = self.aliases()  # search results leave a version's aliases out
        out = []
        for mv in sorted(found, key=lambda v: int(v.version), reverse=True):
            metrics = self.client.get_run(mv.run_id).data.metrics if mv.run_id else {}
            out.append(
                Version(
                    str(mv.version),
                    sorted(a for a, v in aliases.items() if v == str(mv.version)),
                    dict(mv.tags),
                    mv.run_id,
                    int(mv.creation_timestamp),
                    dict(metrics),
                )
            )
        return out

    def history(self) -> list[str]:
        """Champions in promotion order (the registered model's ``champion_history`` tag)."""
        model = self.client.get_registered_model(self.name)
        return model.tags.get(HISTORY_TAG, "").split()

    # --- artifacts --------------------------------------------------------------------------
    def cache_dir(self) -> Path:
        return (self.settings.model_cache_dir or self.settings.data_dir / "model-cache") / (
            self.name
        )

    def fetch(self, version: str) -> Path:
        """The version's artifact dir, downloaded once into an immutable per-version dir.

        The dir name carries the version's creation time, so a registry rebuilt from scratch
        (version 1 again, another artifact) never reuses a stale download.
        """
        mv = self.model_version(version)
        final = self.cache_dir() / f"v{mv.version}-{mv.creation_timestamp}"
        if final.is_dir():
            return final
        import mlflow.artifacts

        staging = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}")
        try:
            # The version's source, not models:/ (which reads the process-wide registry URI).
            downloaded = mlflow.artifacts.download_artifacts(
                artifact_uri=mv.source, dst_path=str(staging), tracking_uri=self.uri
            )
            try:
                Path(downloaded).rename(final)
            except OSError:  # another process (an API worker) downloaded it first
                if not final.is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final

    # --- writing ----------------------------------------------------------------------------
    def register(
        self,
        model_dir: Path,
        metrics: dict[str, float],
        params: dict[str, Any],
        tags: dict[str, str],
    ) -> str:
        """Log ``model_dir`` to a new run and register it as a new version; returns it."""
        client = self.client
        experiment = client.get_experiment_by_name(self.name)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else client.create_experiment(
                self.name, artifact_location=artifact_location(self.settings)
            )
        )
        run = client.create_run(experiment_id, tags=tags, run_name=tags.get("artifact_version"))
        run_id = run.info.run_id
        for key, value in params.items():
            client.log_param(run_id, key, value)
        for key, number in metrics.items():
            client.log_metric(run_id, key, number)
        client.log_artifacts(run_id, str(model_dir), ARTIFACT_PATH)
        client.set_terminated(run_id)
        self._ensure_model()
        mv = client.create_model_version(
            self.name, f"{run.info.artifact_uri}/{ARTIFACT_PATH}", run_id=run_id, tags=tags
        )
        return str(mv.version)

    def _ensure_model(self) -> None:
        try:
            self.client.create_registered_model(
                self.name, description="Fraud probability per transaction (training/train.py)."
            )
        except Exception as exc:
            if mlflow_error(exc) != "RESOURCE_ALREADY_EXISTS":
                raise

    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.name, alias, version)

    def clear_alias(self, alias: str) -> None:
        self.client.delete_registered_model_alias(self.name, alias)

    def set_champion(self, version: str) -> None:
        """``champion`` := version, remembered in the promotion history."""
        self.set_alias(CHAMPION, version)
        history = [*self.history(), version][-HISTORY_KEEP:]
        self.client.set_registered_model_tag(self.name, HISTORY_TAG, " ".join(history))

    def rollback_target(self) -> tuple[str, list[str]]:
        """The champion before the current one, and the history without the current one."""
        current = self.aliases().get(CHAMPION)
        history = self.history()
        while history and history[-1] == current:
            history.pop()
        if not history:
            raise UserError(f"{self.describe()} has no earlier champion to roll back to")
        return history[-1], history

    def rollback(self) -> tuple[str | None, str]:
        """``champion`` := the previous champion; returns (from, to)."""
        current = self.aliases().get(CHAMPION)
        target, history = self.rollback_target()
        self.set_alias(CHAMPION, target)
        self.client.set_registered_model_tag(self.name, HISTORY_TAG, " ".join(history))
        return current, target
