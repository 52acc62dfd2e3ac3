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
from typing import Any, TypeAlias, get_args

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
from core.events import Decision

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


DECISIONS: tuple[str, ...] = get_args(Decision)  # in band order: index = Bands.codes
MAX_REASONS = 3


@dataclass(frozen=True)
class Bands:
    """Decision bands from the manifest: approve < review_at <= review < decline_at <= decline."""

    review_at: float
    decline_at: float

    @classmethod
    def from_manifest(cls, body: Mapping[str, Any], version: str) -> Bands:
        block = body.get("decision")
        try:
            bands = cls(float(block["review_at"]), float(block["decline_at"]))  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            raise ContractMismatch(
                f"model {version} has no decision bands in its manifest; "
                "retrain with `python -m training`"
            ) from None
        # Above 1 is allowed: a band no score reaches (its rate allowed no holdout row).
        if not (0.0 <= bands.review_at <= bands.decline_at and np.isfinite(bands.decline_at)):
            raise ContractMismatch(f"model {version} has invalid decision bands {block}; retrain")
        return bands

    def codes(self, scores: np.ndarray) -> np.ndarray:
        """0 approve, 1 review, 2 decline per score (an index into DECISIONS)."""
        out: np.ndarray = (scores >= self.review_at).astype(np.int8) + (
            scores >= self.decline_at
        ).astype(np.int8)
        return out


# One feature that pushed the score up, as every mode writes it: {"feature", "contribution"}.
Reason: TypeAlias = dict[str, Any]


@dataclass(frozen=True)
class Scored:
    """Everything one model gives a batch of rows: scores, decisions and reasons.

    Reasons are kept as arrays (index into ``features``, -1 for none, and the contribution)
    so a batch of millions of rows never builds a Python object per reason.
    """

    version: str
    features: Sequence[str]
    scores: np.ndarray  # float64 (n,)
    codes: np.ndarray  # int8 (n,), index into DECISIONS
    reason_index: np.ndarray  # int (n, MAX_REASONS), -1 = no reason in that slot
    reason_value: np.ndarray  # float64 (n, MAX_REASONS)

    @property
    def decisions(self) -> np.ndarray:
        out: np.ndarray = np.asarray(DECISIONS, dtype=object)[self.codes]
        return out

    def reasons(self, row: int) -> list[Reason]:
        return self._reasons(self.reason_index[row].tolist(), self.reason_value[row].tolist())

    def all_reasons(self) -> list[list[Reason]]:
        # tolist() once: numpy element access row by row is slow (docs/performance.md)
        rows = zip(self.reason_index.tolist(), self.reason_value.tolist(), strict=True)
        return [self._reasons(index, values) for index, values in rows]

    def _reasons(self, index: list[int], values: list[float]) -> list[Reason]:
        names = self.features
        return [
            {"feature": names[i], "contribution": v}
            for i, v in zip(index, values, strict=True)
            if i >= 0
        ]


@dataclass(frozen=True)
class Linear:
    """The fitted impute -> log -> scale -> logistic chain as array operations."""

    fill: np.ndarray
    mean: np.ndarray | float
    scale: np.ndarray | float
    coef: np.ndarray
    intercept: float

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Each feature's term of the logit, coef * standardized value, per row."""
        z = (signed_log1p(np.where(np.isnan(x), self.fill, x)) - self.mean) / self.scale
        out: np.ndarray = z * self.coef
        return out

    def proba(self, contributions: np.ndarray) -> np.ndarray:
        # A per-row sum rather than a BLAS product: a row's score must not depend
        # on which other rows share its batch (BLAS kernels vary with the shape).
        out: np.ndarray = expit(contributions.sum(axis=1) + self.intercept)
        return out


def compile_linear(pipeline: Pipeline) -> Linear | None:
    """The fitted chain's parameters, so scoring is four array operations.

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
            return Linear(
                fill=imputer.statistics_,
                mean=scaler.mean_ if scaler.with_mean else 0.0,
                scale=scaler.scale_ if scaler.with_std else 1.0,
                coef=model.coef_[0],
                intercept=float(model.intercept_[0]),
            )
    return None


def top_reasons(contributions: np.ndarray, k: int = MAX_REASONS) -> tuple[np.ndarray, np.ndarray]:
    """The k largest positive contributions per row, highest first, ties in feature order."""
    k = min(k, contributions.shape[1])
    # A stable sort of the negated values keeps equal contributions in feature order.
    order = np.argsort(-contributions, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(contributions, order, axis=1)
    positive = values > 0
    index = np.where(positive, order, -1)
    values = np.where(positive, values, 0.0)
    if k < MAX_REASONS:  # fewer features than reason slots: pad so every Scored has one shape
        pad = ((0, 0), (0, MAX_REASONS - k))
        index, values = np.pad(index, pad, constant_values=-1), np.pad(values, pad)
    return index, values


class Predictor:
    """A fitted scikit-learn pipeline bound to its feature order and decision bands."""

    def __init__(self, pipeline: Pipeline, manifest: Manifest, version: str | None = None) -> None:
        self.pipeline = pipeline
        self.manifest = manifest
        self.features = list(manifest.features)
        self.version = version or manifest.model_version
        self.bands = Bands.from_manifest(manifest.body, self.version)
        self._linear = compile_linear(pipeline)

    @classmethod
    def load(
        cls, model_dir: Path, service: FeatureService, version: str | None = None
    ) -> Predictor:
        """Load and verify the artifact against the FeatureService from the registry.

        ``version`` names it where it came from (a registry version); default: the manifest's.
        """
        manifest = Manifest.read(model_dir)
        check_contract(manifest, service)
        model_path = model_dir / MODEL_FILE
        if file_sha256(model_path) != manifest.checksum:
            raise ContractMismatch(f"{model_path} does not match the checksum in its manifest")
        return cls(joblib.load(model_path), manifest, version)

    def matrix(self, columns: Columns) -> np.ndarray:
        """Feature matrix in contract order, picked by name: the one place order is enforced.

        None/null become NaN for the imputer.
        """
        return np.column_stack(
            [np.asarray(columns[name], dtype=np.float64) for name in self.features]
        )

    def predict(self, columns: Columns) -> np.ndarray:
        """Fraud probability per row of a frame or a Feast-style dict of columns."""
        return self.score_matrix(self.matrix(columns)).scores

    def score(self, columns: Columns) -> Scored:
        """Scores, decisions and reasons per row of a frame or a dict of columns."""
        return self.score_matrix(self.matrix(columns))

    def score_matrix(self, x: np.ndarray) -> Scored:
        n = x.shape[0]
        if self._linear is not None:
            contributions = self._linear.contributions(x)
            scores = self._linear.proba(contributions)
            index, values = top_reasons(contributions)
        else:  # no logit terms to rank: scores and decisions only
            scores = self.pipeline.predict_proba(x)[:, 1]
            index = np.full((n, MAX_REASONS), -1)
            values = np.zeros((n, MAX_REASONS))
        return Scored(self.version, self.features, scores, self.bands.codes(scores), index, values)


@dataclass(frozen=True)
class Shadowed:
    """One batch scored by the champion and, when set, the challenger on the same vectors."""

    champion: Scored
    challenger: Scored | None

    def agreement(self) -> dict[str, int]:
        """How many records' challenger decision equals the champion's: the metrics' outcome
        label (agree, disagree) -> count; empty without a challenger."""
        if self.challenger is None:
            return {}
        agree = int((self.challenger.codes == self.champion.codes).sum())
        return {"agree": agree, "disagree": len(self.challenger.codes) - agree}


@dataclass(frozen=True)
class Models:
    """What one score uses: the champion, and the challenger that is shadow-scored (optional)."""

    champion: Predictor
    challenger: Predictor | None = None

    def score(self, columns: Columns) -> Shadowed:
        """Both models on one feature matrix (the contract gives them the same order)."""
        x = self.champion.matrix(columns)
        shadow = None
        if self.challenger is not None:
            same = self.challenger.features == self.champion.features
            shadow = self.challenger.score_matrix(x if same else self.challenger.matrix(columns))
        return Shadowed(self.champion.score_matrix(x), shadow)


def check_contract(manifest: Manifest, service: FeatureService) -> None:
    expected = feature_order(service)
    if manifest.feature_service != service.name or manifest.features != expected:
        raise ContractMismatch(
            f"model {manifest.model_version} was trained on {manifest.feature_service} "
            f"{manifest.features}, but the registry's {service.name} serves {expected}; "
            "retrain with `python -m training`"
        )
