"""`python -m serving` as a real process: Redis outages and model reloads under load."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import joblib
import pytest

from core.predictor import MANIFEST_FILE, MODEL_FILE, file_sha256
from tests.conftest import Stack
from tests.integration.serving_support import ROW, free_port, redis_server, uvicorn_process

pytestmark = pytest.mark.integration


def test_redis_outage_fast_503_then_recovery_without_restart(ready: Stack, tmp_path: Path) -> None:
    port = free_port()
    env = {"REDIS_CONNECTION_STRING": f"127.0.0.1:{port}"}
    with (
        redis_server(port) as redis_proc,
        uvicorn_process(ready, env, tmp_path / "serve.log") as url,
    ):
        assert httpx.post(f"{url}/v1/predict", json=ROW, timeout=5).status_code == 200
        redis_proc.kill()
        redis_proc.wait()
        for _ in range(5):
            # A client timeout far above the 100 ms bound: a hang would fail here.
            r = httpx.post(f"{url}/v1/predict", json=ROW, timeout=3)
            assert r.status_code == 503
            assert r.json()["detail"].startswith("online store unavailable")
        assert httpx.get(f"{url}/ready", timeout=3).status_code == 503
        with redis_server(port):
            statuses = []
            for _ in range(100):
                statuses.append(httpx.post(f"{url}/v1/predict", json=ROW, timeout=3).status_code)
                if statuses[-1] == 200:
                    break
                time.sleep(0.1)
            assert statuses[-1] == 200, statuses
            assert set(statuses) <= {200, 503}
            assert httpx.get(f"{url}/ready", timeout=3).status_code == 200


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


def test_model_reload_under_load_fails_no_request(ready: Stack, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(ready.settings.model_path, model_dir)
    env = {"MODEL_DIR": str(model_dir), "MODEL_RELOAD_INTERVAL_S": "0.2"}
    with uvicorn_process(ready, env, tmp_path / "serve.log") as url:
        old = httpx.get(f"{url}/ready").json()["model_version"]
        stop = threading.Event()
        seen: list[tuple[int, str | None]] = []

        def load() -> None:
            with httpx.Client(base_url=url, timeout=5) as client:
                for _ in range(3000):  # bounded in count and, through `stop`, in time
                    if stop.is_set():
                        return
                    r = client.post("/v1/predict", json=ROW)
                    seen.append((r.status_code, r.json().get("model_version")))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        new = publish_new_artifact(model_dir)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(v == new for _, v in seen[-50:]):
            time.sleep(0.1)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
    assert new != old
    assert [s for s, _ in seen if s != 200] == []
    assert {v for _, v in seen} == {old, new}
