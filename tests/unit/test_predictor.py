"""The predictor binds a pipeline to the FeatureService's order and refuses mismatches."""

import json
from pathlib import Path

import joblib
import numpy as np
import pytest
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64

from core.predictor import MANIFEST_FILE, MODEL_FILE, ContractMismatch, Predictor, file_sha256
from training.train import make_pipeline


def _service(names: list[str]) -> FeatureService:
    view = FeatureView(
        name="v",
        entities=[Entity(name="e", join_keys=["e_id"], value_type=ValueType.INT64)],
        schema=[Field(name=n, dtype=Float64) for n in names],
        source=FileSource(path="unused.parquet", timestamp_field="ts"),
    )
    return FeatureService(name="svc_v1", features=[view])


def _artifact(tmp_path: Path, names: list[str], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, len(names)))
    y = (x[:, 0] + rng.normal(0, 0.5, 300) > 0).astype(int)
    joblib.dump(make_pipeline(0).fit(x, y), tmp_path / MODEL_FILE)
    manifest = {
        "model_version": "svc_v1-test",
        "feature_service": "svc_v1",
        "features": names,
        "checksum": file_sha256(tmp_path / MODEL_FILE),
        "decision": {"review_at": 0.5, "decline_at": 0.9},
    }
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
    return tmp_path


def test_column_order_comes_from_the_manifest(tmp_path: Path) -> None:
    predictor = Predictor.load(_artifact(tmp_path, ["a", "b"]), _service(["a", "b"]))
    cols = {"b": [0.0, 0.0], "a": [3.0, -3.0]}
    scores = predictor.predict(cols)
    assert scores[0] > 0.5 > scores[1]
    assert predictor.predict({"a": [None], "b": [1.0]}).shape == (1,)  # missing -> imputed


def test_refuses_other_feature_order(tmp_path: Path) -> None:
    with pytest.raises(ContractMismatch, match="retrain"):
        Predictor.load(_artifact(tmp_path, ["a", "b"]), _service(["b", "a"]))


def test_refuses_tampered_artifact(tmp_path: Path) -> None:
    model_dir = _artifact(tmp_path, ["a", "b"])
    with (model_dir / MODEL_FILE).open("ab") as fh:
        fh.write(b"0")
    with pytest.raises(ContractMismatch, match="checksum"):
        Predictor.load(model_dir, _service(["a", "b"]))


def test_compiled_linear_path_equals_scikit_learn_and_ignores_batch_mates(tmp_path: Path) -> None:
    names = [f"f{i}" for i in range(6)]
    predictor = Predictor.load(_artifact(tmp_path, names), _service(names))
    rng = np.random.default_rng(1)
    x = rng.lognormal(1, 2, size=(5000, len(names)))
    x[rng.random(x.shape) < 0.1] = np.nan
    cols = {n: x[:, i] for i, n in enumerate(names)}
    together = predictor.predict(cols)
    np.testing.assert_allclose(
        together, predictor.pipeline.predict_proba(x)[:, 1], rtol=0, atol=1e-14
    )
    alone = [
        predictor.predict({n: x[i : i + 1, j] for j, n in enumerate(names)})[0] for i in range(300)
    ]
    assert np.array_equal(np.array(alone), together[:300])  # bit for bit, whatever the batch
