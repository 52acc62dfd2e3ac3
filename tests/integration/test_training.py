"""Training through Feast on the default data: quality, artifact round trip, contract."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.contract import feature_order
from core.models import pin_models
from core.predictor import MANIFEST_FILE, ContractMismatch, Predictor
from core.store import feature_service, open_store
from harness.models import champion_dir
from tests.conftest import Stack
from training.dataset import entity_frame, training_frame

pytestmark = pytest.mark.integration


def test_holdout_quality_and_manifest(trained: Stack) -> None:
    manifest = json.loads((champion_dir(trained.settings) / MANIFEST_FILE).read_text())
    assert manifest["metrics"]["roc_auc"] >= 0.85
    assert 0 < manifest["metrics"]["pr_auc"] <= 1
    assert manifest["metrics"]["expected_calibration_error"] < 0.05
    for key in ("model_version", "training_window", "libraries", "checksum", "defaults"):
        assert manifest[key]
    assert manifest["training_window"]["end"] == manifest["holdout_window"]["start"]
    assert (champion_dir(trained.settings) / "report.png").stat().st_size > 10_000


def test_artifact_round_trip_in_feature_service_order(trained: Stack) -> None:
    store = open_store(trained.settings)
    service = feature_service(store)
    predictor = pin_models(trained.settings, service).champion
    assert predictor.features == feature_order(service)

    tx = trained.settings.data_dir / "transactions.parquet"
    frame = training_frame(store, service, entity_frame(tx, *_last_hour(trained)))
    direct = predictor.pipeline.predict_proba(frame[feature_order(service)].to_numpy(float))[:, 1]
    shuffled = frame[list(reversed(frame.columns))]  # column order must not matter
    # Same values; only BLAS summation order may differ with memory layout (~1e-16).
    np.testing.assert_allclose(predictor.predict(shuffled), direct, rtol=0, atol=1e-12)


def test_mismatched_artifact_is_refused(trained: Stack, tmp_path: Path) -> None:
    assert trained.python("-m", "training", "--verify-only").returncode == 0
    bad = tmp_path / "model"
    shutil.copytree(champion_dir(trained.settings), bad)
    manifest = json.loads((bad / MANIFEST_FILE).read_text())
    manifest["features"] = manifest["features"][::-1]
    (bad / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ContractMismatch):
        Predictor.load(bad, feature_service(open_store(trained.settings)))

    out = trained.python("-m", "training", "--verify-only", env={"MODEL_DIR": str(bad)})
    assert out.returncode == 2
    assert "retrain" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def _last_hour(stack: Stack) -> tuple[datetime, datetime]:
    hi = pd.read_parquet(
        stack.settings.data_dir / "transactions.parquet", columns=["event_timestamp"]
    )["event_timestamp"].max()
    return hi - timedelta(hours=1), hi + timedelta(microseconds=1)
