"""The one predictor that batch, streaming and online scoring use.

It loads the model artifact written by ``training`` and refuses it unless its
manifest names the same FeatureService and the same ordered feature list as
the registry, so a model can never silently read the wrong columns.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from feast import FeatureService

from core.cli import UserError
from core.contract import feature_order

MODEL_FILE = "model.joblib"
MANIFEST_FILE = "manifest.json"


class ContractMismatch(UserError):
    """The artifact was trained against another feature list than the registry serves."""


@dataclass(frozen=True)
class Manifest:
    model_version: str
    feature_service: str
    features: list[str]
    checksum: str
    body: dict[str, Any]

    @classmethod
    def read(cls, model_dir: Path) -> Manifest:
        path = model_dir / MANIFEST_FILE
        if not path.exists():
            raise UserError(f"no model manifest at {path}; run `python -m training` first")
        body = json.loads(path.read_text())
        return cls(
            body["model_version"], body["feature_service"], body["features"], body["checksum"], body
        )


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """Compress heavy-tailed counts and amounts; lives here so any artifact unpickles."""
    out: np.ndarray = np.sign(x) * np.log1p(np.abs(x))
    return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Predictor:
    """A fitted scikit-learn pipeline bound to its feature order."""

    def __init__(self, pipeline: Any, manifest: Manifest) -> None:
        self.pipeline = pipeline
        self.manifest = manifest
        self.features = list(manifest.features)
        self.version = manifest.model_version

    @classmethod
    def load(cls, model_dir: Path, service: FeatureService) -> Predictor:
        """Load and verify the artifact against the FeatureService from the registry."""
        manifest = Manifest.read(model_dir)
        check_contract(manifest, service)
        model_path = model_dir / MODEL_FILE
        if file_sha256(model_path) != manifest.checksum:
            raise ContractMismatch(f"{model_path} does not match the checksum in its manifest")
        return cls(joblib.load(model_path), manifest)

    def matrix(self, columns: Mapping[str, Sequence[Any]] | pd.DataFrame) -> np.ndarray:
        """Feature matrix in contract order; None/null become NaN for the imputer."""
        return np.column_stack(
            [np.asarray(columns[name], dtype=np.float64) for name in self.features]
        )

    def predict(self, columns: Mapping[str, Sequence[Any]] | pd.DataFrame) -> np.ndarray:
        """Fraud probability per row of a frame or a Feast-style dict of columns."""
        scores: np.ndarray = self.pipeline.predict_proba(self.matrix(columns))[:, 1]
        return scores


def check_contract(manifest: Manifest, service: FeatureService) -> None:
    expected = feature_order(service)
    if manifest.feature_service != service.name or manifest.features != expected:
        raise ContractMismatch(
            f"model {manifest.model_version} was trained on {manifest.feature_service} "
            f"{manifest.features}, but the registry's {service.name} serves {expected}; "
            "retrain with `python -m training`"
        )
