"""`python -m serving` as a real process: model reloads under load.

Redis outages: tests/integration/test_faults_online.py.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import joblib
import pytest

from core.predictor import MANIFEST_FILE, MODEL_FILE, file_sha256
from harness.servers import SAMPLE_REQUEST, serving_process
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def publish_new_artifact(model_dir: Path) -> str:
    """A different but valid artifact, swapped in by directory renames as training does."""
    staging = model_dir.with_name("model.new")
    shutil.copytree(model_dir, staging)
    pipeline = joblib.load(staging / MODEL_FILE)
    pipeline.named_steps["model"].coef_ *= 1.05
    joblib.dump(pipeline, staging / MODEL_FILE)
    manifest = json.loads((staging / MANIFEST_FILE).read_text())
    manifest["checksum"] = file_sha256(staging / MODEL_FILE)
    manifest["model_version"] = f"{manifest['feature_service']}-{manifest['checksum'][:12]}"
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest))
    old = model_dir.with_name("model.old")
    model_dir.rename(old)
    staging.rename(model_dir)
    shutil.rmtree(old)
    return str(manifest["model_version"])


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passes; whether it held."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_model_reload_under_load_fails_no_request(ready: Stack, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(ready.settings.model_path, model_dir)
    env = {"MODEL_DIR": str(model_dir), "MODEL_RELOAD_INTERVAL_S": "0.2"}
    with serving_process(ready.env | env, tmp_path / "serve.log") as url:
        old = httpx.get(f"{url}/ready").json()["model_version"]
        stop = threading.Event()
        seen: list[tuple[int, str | None]] = []

        def load() -> None:
            with httpx.Client(base_url=url, timeout=5) as client:
                for _ in range(3000):  # bounded in count and, through `stop`, in time
                    if stop.is_set():
                        return
                    r = client.post("/v1/predict", json=SAMPLE_REQUEST)
                    seen.append((r.status_code, r.json().get("model_version")))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            assert wait_for(lambda: len(seen) >= 50, 15), "the load never got going"
            new = publish_new_artifact(model_dir)
            assert wait_for(lambda: any(v == new for _, v in seen[-50:]), 15), "never reloaded"
            served_new = len(seen)
            assert wait_for(lambda: len(seen) >= served_new + 50, 15), "the load stopped"
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert new != old
    assert [s for s, _ in seen if s != 200] == []
    assert {v for _, v in seen} == {old, new}
