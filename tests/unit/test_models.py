"""ModelWatcher's rules on a source of real artifacts: swap on an alias move, keep the previous
model on a refused candidate without retrying it, clear the refusal when the alias moves on."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import joblib
import numpy as np
import pytest
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64

from core.cli import UserError
from core.models import ModelWatcher, pin_models
from core.predictor import MANIFEST_FILE, MODEL_FILE, Predictor, file_sha256
from core.settings import Settings
from training.train import make_pipeline

NAMES = ["a", "b"]


def _service() -> FeatureService:
    view = FeatureView(
        name="v",
        entities=[Entity(name="e", join_keys=["e_id"], value_type=ValueType.INT64)],
        schema=[Field(name=n, dtype=Float64) for n in NAMES],
        source=FileSource(path="unused.parquet", timestamp_field="ts"),
    )
    return FeatureService(name="svc_v1", features=[view])


def _artifact(root: Path, seed: int, *, tampered: bool = False) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, len(NAMES)))
    y = (x[:, 0] + rng.normal(0, 0.5, 200) > 0).astype(int)
    joblib.dump(make_pipeline(0).fit(x, y), root / MODEL_FILE)
    manifest = {
        "model_version": f"svc_v1-{seed}",
        "feature_service": "svc_v1",
        "features": NAMES,
        "checksum": "0" * 64 if tampered else file_sha256(root / MODEL_FILE),
        "decision": {"review_at": 0.5, "decline_at": 0.9},
    }
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))
    return root


class Aliases:
    """A registry's aliases over artifact dirs: the watcher's Source protocol, no MLflow."""

    def __init__(self, dirs: dict[str, Path]) -> None:
        self.dirs = dirs
        self.keys: dict[str, str] = {}
        self.loads: list[str] = []

    def describe(self) -> str:
        return "test aliases"

    def resolve(self) -> dict[str, str]:
        return dict(self.keys)

    def load(self, key: str) -> Predictor:
        self.loads.append(key)
        return Predictor.load(self.dirs[key], _service(), f"m/{key}")


def _watcher(tmp_path: Path, keys: dict[str, str]) -> tuple[ModelWatcher, Aliases]:
    source = Aliases(
        {
            "1": _artifact(tmp_path / "1", 1),
            "2": _artifact(tmp_path / "2", 2),
            "3": _artifact(tmp_path / "3", 3, tampered=True),
        }
    )
    source.keys = keys
    return ModelWatcher(Settings(), _service(), source=source), source


def test_alias_moves_swap_the_models_in_one_assignment(tmp_path: Path) -> None:
    watcher, source = _watcher(tmp_path, {"champion": "1"})
    first = watcher.current
    assert first.champion.version == "m/1" and first.challenger is None
    assert watcher.check() is False and watcher.current is first  # nothing moved

    source.keys = {"champion": "1", "challenger": "2"}
    assert watcher.check() is True
    assert watcher.current.champion is first.champion  # an unchanged role is not reloaded
    assert watcher.current.challenger is not None and watcher.current.challenger.version == "m/2"

    source.keys = {"champion": "2"}  # promoted; challenger cleared
    assert watcher.check() is True
    assert watcher.current.champion.version == "m/2" and watcher.current.challenger is None
    assert source.loads == ["1", "2", "2"]


def test_refused_candidate_keeps_the_previous_champion_until_the_alias_moves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    watcher, source = _watcher(tmp_path, {"champion": "1"})
    source.keys = {"champion": "3"}  # a checksum failure
    with caplog.at_level(logging.WARNING, logger="core.models"):
        assert watcher.check() is False
    assert watcher.current.champion.version == "m/1"
    assert watcher.refused is not None and "checksum" in watcher.refused
    assert sum("refused" in r.message for r in caplog.records) == 1

    assert watcher.check() is False  # not retried every interval
    assert source.loads.count("3") == 1
    assert watcher.check(force=True) is False  # a forced check retries it, and refuses again
    assert source.loads.count("3") == 2 and watcher.refused is not None

    source.keys = {"champion": "1"}  # rolled back: nothing is refused any more
    assert watcher.check() is False and watcher.refused is None
    source.keys = {"champion": "2"}
    assert watcher.check() is True and watcher.current.champion.version == "m/2"


def test_lost_champion_alias_or_registry_keeps_serving(tmp_path: Path) -> None:
    watcher, source = _watcher(tmp_path, {"champion": "1"})
    source.keys = {}
    assert watcher.check() is False and watcher.current.champion.version == "m/1"

    def down() -> dict[str, str]:
        raise ConnectionError("registry unreachable")

    source.resolve = down  # type: ignore[method-assign]
    assert watcher.check() is False and watcher.current.champion.version == "m/1"


def test_failed_download_keeps_serving_and_is_retried(tmp_path: Path) -> None:
    watcher, source = _watcher(tmp_path, {"champion": "1"})
    real_load = source.load
    failures = iter([OSError("connection reset")])

    def flaky(key: str) -> Predictor:
        for exc in failures:
            raise exc
        return real_load(key)

    source.load = flaky  # type: ignore[method-assign]
    source.keys = {"champion": "2"}
    assert watcher.check() is False and watcher.current.champion.version == "m/1"
    assert watcher.refused is None  # not the artifact's fault
    assert watcher.check() is True and watcher.current.champion.version == "m/2"


def test_bad_challenger_at_start_is_refused_and_the_champion_serves(tmp_path: Path) -> None:
    watcher, _ = _watcher(tmp_path, {"champion": "1", "challenger": "3"})
    assert watcher.current.champion.version == "m/1" and watcher.current.challenger is None
    assert watcher.refused is not None and watcher.refused.startswith("challenger 3 refused")


def test_no_champion_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no champion"):
        _watcher(tmp_path, {})


def test_model_dir_is_followed_by_its_manifest(tmp_path: Path) -> None:
    model_dir = _artifact(tmp_path / "model", 1)
    settings = Settings(feature_repo=tmp_path / "repo", model_dir=model_dir)
    assert pin_models(settings, _service()).champion.version == "svc_v1-1"
    watcher = ModelWatcher(settings, _service())
    assert watcher.check() is False
    replacement = _artifact(tmp_path / "next", 2)
    (model_dir / MANIFEST_FILE).unlink()  # mid-swap: no manifest, the loaded model serves
    assert watcher.check() is False and watcher.current.champion.version == "svc_v1-1"
    for name in (MODEL_FILE, MANIFEST_FILE):
        (replacement / name).replace(model_dir / name)
    assert watcher.check() is True and watcher.current.champion.version == "svc_v1-2"
