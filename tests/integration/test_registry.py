"""MLflow's Model Registry as its users see it: training registers its model with artifacts,
metrics and lineage; later versions are only registered and none is deleted; ``fraud-models``
moves the aliases and MLflow's own REST API (a real ``mlflow server`` on the same store) shows
the same state; a batch re-run pins the champion and says when it changed. Alias moves run on
private registries: the session's champion never moves."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from batch.output import read_day
from batch.score import ScoreOptions, run_score
from core.predictor import MANIFEST_FILE, Predictor
from core.settings import Settings, get_settings
from core.store import feature_service, open_store
from harness.models import champion_dir, private_registry, registry_env
from harness.servers import free_port, launched
from registry.__main__ import main as fraud_models
from registry.register import Registered, register_trained
from registry.store import HISTORY_TAG, Registry, version_name
from tests.conftest import Clock, Stack

pytestmark = pytest.mark.integration

ARTIFACT_FILES = {"model.joblib", "manifest.json", "metrics.json", "report.png"}


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """The CLI's cached settings come from a test's environment: none outlive the test."""
    yield
    get_settings.cache_clear()


def _register_copies(settings: Settings, source: Path, n: int) -> list[Registered]:
    """``n`` versions of the artifact in ``source``, registered as training registers them."""
    manifest = json.loads((source / MANIFEST_FILE).read_text())
    return [register_trained(settings, source, manifest, {"copy": i}) for i in range(n)]


class MlflowRest:
    """MLflow's REST API for one registered model."""

    def __init__(self, url: str, name: str) -> None:
        self.api, self.name = f"{url}/api/2.0/mlflow", name

    def model(self) -> dict[str, Any]:
        r = httpx.get(f"{self.api}/registered-models/get", params={"name": self.name})
        r.raise_for_status()
        body: dict[str, Any] = r.json()["registered_model"]
        return body

    def aliases(self) -> dict[str, str]:
        return {a["alias"]: a["version"] for a in self.model().get("aliases", [])}

    def history(self) -> list[str]:
        tags = {t["key"]: t["value"] for t in self.model().get("tags", [])}
        return tags.get(HISTORY_TAG, "").split()

    def versions(self) -> list[str]:
        r = httpx.get(f"{self.api}/model-versions/search", params={"filter": f"name='{self.name}'"})
        r.raise_for_status()
        return sorted(v["version"] for v in r.json()["model_versions"])


def _cli(
    capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:  # fmt: skip
    get_settings.cache_clear()  # the CLI reads the environment, as a user's shell gives it
    code = fraud_models(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_moves_aliases_and_mlflow_rest_api_shows_the_same(
    trained: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = private_registry(trained.settings, tmp_path)
    registered = _register_copies(settings, champion_dir(trained.settings), 3)
    assert [r.version for r in registered] == ["1", "2", "3"]
    assert [r.is_champion for r in registered] == [True, False, False]  # only the first
    for key, value in (trained.env | registry_env(settings)).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # no job runner: faster
    port = free_port()
    assert settings.mlflow_tracking_uri is not None
    server = [str(Path(sys.executable).with_name("mlflow")), "server", "--workers", "1"]
    server += ["--backend-store-uri", settings.mlflow_tracking_uri, "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with launched(server, f"{url}/health", tmp_path / "mlflow.log", dict(os.environ), None, 240):
        rest = MlflowRest(url, settings.model_name)
        assert rest.versions() == ["1", "2", "3"]
        assert rest.aliases() == {"champion": "1"} and rest.history() == ["1"]
        steps = [  # command, then (champion, challenger) as MLflow must show them
            (("promote", "2"), ("2", None)),
            (("challenger", "3"), ("2", "3")),
            (("promote", "3"), ("3", None)),  # promoting the challenger clears it
            (("rollback",), ("2", None)),
            (("rollback",), ("1", None)),
            (("challenger", "2"), ("1", "2")),
            (("challenger", "--clear"), ("1", None)),
        ]
        for argv, (champion, challenger) in steps:
            code, out, err = _cli(capsys, *argv)
            assert code == 0 and len(out.strip().splitlines()) == 1, (argv, out, err)
            want = {"champion": champion} | ({"challenger": challenger} if challenger else {})
            assert rest.aliases() == want == Registry(settings).aliases(), argv
        assert rest.history() == ["1"]  # two promotions, two rollbacks
        assert rest.versions() == ["1", "2", "3"]  # nothing deleted

        code, listing, _ = _cli(capsys, "list")
        assert code == 0
        rows = [line.split() for line in listing.splitlines() if line[:1].isdigit()]
        assert [(r[0], r[1]) for r in rows] == [("3", "-"), ("2", "-"), ("1", "champion")]
        for argv, message in [
            (("promote", "9"), "no version 9"),
            (("rollback",), "no earlier champion"),
            (("challenger", "1"), "is the champion"),
            (("promote", "two"), "must be a number"),
        ]:
            code, out, err = _cli(capsys, *argv)
            assert code == 2 and not out and message in err, (argv, err)
            assert len(err.strip().splitlines()) == 1
        assert rest.aliases() == {"champion": "1"}  # refused commands changed nothing


def test_training_registered_its_model_with_artifacts_metrics_and_lineage(trained: Stack) -> None:
    """The session's ``python -m training``: version 1, the champion, everything attached."""
    registry = Registry(trained.settings)
    (version,) = registry.versions()
    assert version.version == "1" and registry.aliases() == {"champion": "1"}
    assert registry.history() == ["1"]

    artifact = registry.fetch("1")
    assert {p.name for p in artifact.iterdir()} >= ARTIFACT_FILES
    service = feature_service(open_store(trained.settings))
    predictor = Predictor.load(artifact, service, version_name(registry.name, 1))
    manifest = predictor.manifest.body
    assert version.tags["checksum"] == manifest["checksum"]
    assert version.tags["feature_service"] == service.name
    assert version.tags["training_data_start"] == manifest["training_window"]["start"]
    assert version.tags["training_data_end"] == manifest["holdout_window"]["end"]
    assert version.tags["code_version"].startswith(("git:", "fraud-scoring=="))
    assert version.metrics["roc_auc"] == pytest.approx(manifest["metrics"]["roc_auc"])
    assert registry.fetch("1") == artifact  # downloaded once, then reused


def test_batch_rerun_pins_the_champion_and_says_it_changed(
    trained: Stack, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = private_registry(trained.settings, tmp_path / "registry").model_copy(
        update={"batch_output_dir": str(tmp_path / "scores")}
    )
    _register_copies(settings, champion_dir(trained.settings), 2)
    day: date = clock.now.date() - timedelta(days=1)
    opts = ScoreOptions(day=day, limit=300)

    def run() -> tuple[dict[str, Any], list[str], list[str]]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="batch.score"):
            manifest = run_score(settings, opts)
        rows = read_day(str(tmp_path / "scores"), day, ["model_version"])
        assert rows is not None and rows.num_rows == 300
        notes = [r.getMessage() for r in caplog.records if "re-scoring" in r.getMessage()]
        return manifest, rows.column("model_version").to_pylist(), notes

    first, versions, notes = run()
    assert first["model_version"] == "fraud-detector/1" and set(versions) == {"fraud-detector/1"}
    assert not notes

    Registry(settings).set_champion("2")
    second, versions, notes = run()
    assert second["model_version"] == "fraud-detector/2" and set(versions) == {"fraud-detector/2"}
    assert len(notes) == 1
    assert "fraud-detector/2" in notes[0] and "fraud-detector/1" in notes[0]
    assert first["run_id"] in notes[0]

    assert run()[2] == []  # the same champion again: nothing to say
