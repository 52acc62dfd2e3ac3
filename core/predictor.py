"""The one predictor that batch, streaming and online scoring use.

It loads the model artifact written by ``training`` and refuses it unless its
manifest names the same FeatureService and the same ordered feature list as
the registry, so a model can never silently read the wrong columns.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
from feast import FeatureService
from scipy.special import expit
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from core.cli import UserError
from core.contract import feature_order

# A DataFrame or Arrow table, or a dict of columns as Feast's OnlineResponse.to_dict() gives.
Columns: TypeAlias = Mapping[str, Sequence[Any] | np.ndarray] | pd.DataFrame | pa.Table

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


def compile_linear(pipeline: Pipeline) -> Callable[[np.ndarray], np.ndarray] | None:
    """The fitted impute -> log -> scale -> logistic chain as four array operations.

    scikit-learn validates and copies the input at every step, which cost more per row than
    the Redis read (``docs/performance.md``, "Predictor"); the same arithmetic gives the same
    probabilities (a test holds them). Returns None for any other pipeline (scikit-learn runs).
    """
    match [step for _, step in pipeline.steps]:
        case [
            SimpleImputer(add_indicator=False) as imputer,
            FunctionTransformer(func=func) as log,
            StandardScaler() as scaler,
            LogisticRegression() as model,
        ] if func is signed_log1p and log.inverse_func is None and model.coef_.shape[0] == 1:
            fill = imputer.statistics_
            mean = scaler.mean_ if scaler.with_mean else 0.0
            scale = scaler.scale_ if scaler.with_std else 1.0
            coef, intercept = model.coef_[0], model.intercept_[0]

            def proba(x: np.ndarray) -> np.ndarray:
                z = (signed_log1p(np.where(np.isnan(x), fill, x)) - mean) / scale
                # A per-row sum rather than a BLAS product: a row's score must not depend
                # on which other rows share its batch (BLAS kernels vary with the shape).
                out: np.ndarray = expit((z * coef).sum(axis=1) + intercept)
                return out

            return proba
    return None


class Predictor:
    """A fitted scikit-learn pipeline bound to its feature order."""

    def __init__(self, pipeline: Pipeline, manifest: Manifest) -> None:
        self.pipeline = pipeline
        self.manifest = manifest
        self.features = list(manifest.features)
        self.version = manifest.model_version
        self._fast = compile_linear(pipeline)

    @classmethod
    def load(cls, model_dir: Path, service: FeatureService) -> Predictor:
        """Load and verify the artifact against the FeatureService from the registry."""
        manifest = Manifest.read(model_dir)
        check_contract(manifest, service)
        model_path = model_dir / MODEL_FILE
        if file_sha256(model_path) != manifest.checksum:
            raise ContractMismatch(f"{model_path} does not match the checksum in its manifest")
        return cls(joblib.load(model_path), manifest)

    def matrix(self, columns: Columns) -> np.ndarray:
        """Feature matrix in contract order, picked by name: the one place order is enforced.

        None/null become NaN for the imputer.
        """
        return np.column_stack(
            [np.asarray(columns[name], dtype=np.float64) for name in self.features]
        )

    def predict(self, columns: Columns) -> np.ndarray:
        """Fraud probability per row of a frame or a Feast-style dict of columns."""
        x = self.matrix(columns)
        if self._fast is not None:
            return self._fast(x)
        scores: np.ndarray = self.pipeline.predict_proba(x)[:, 1]
        return scores


def check_contract(manifest: Manifest, service: FeatureService) -> None:
    expected = feature_order(service)
    if manifest.feature_service != service.name or manifest.features != expected:
        raise ContractMismatch(
            f"model {manifest.model_version} was trained on {manifest.feature_service} "
            f"{manifest.features}, but the registry's {service.name} serves {expected}; "
            "retrain with `python -m training`"
        )
