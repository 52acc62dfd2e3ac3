"""`python -m serving` as a real process: model reloads under load, connections left open.

Redis outages: tests/integration/test_faults_online.py.
"""

from __future__ import annotations

import json
import resource
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import joblib
import pytest

from core.predictor import MANIFEST_FILE, MODEL_FILE, file_sha256
from harness.models import champion_dir
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
    shutil.copytree(champion_dir(ready.settings), model_dir)
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


# The most connections a 2x overload left open here (verify.faults_online, 2 workers), all of
# which may sit on one worker: uvicorn's workers share one listening socket.
LEFT_OPEN = 2_100


def test_connections_left_open_by_an_overload_do_not_refuse_new_clients(
    ready: Stack, tmp_path: Path
) -> None:
    """uvicorn counts idle connections against SERVING_LIMIT_CONCURRENCY and answers new
    clients 503 while the count is over it; an overload's clients leave theirs open, so the
    guard must sit above that or service does not resume when the overload ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * LEFT_OPEN)), hard))
    with serving_process(ready.env, tmp_path / "serve.log") as url:
        host, port = url.removeprefix("http://").split(":")
        left = [socket.create_connection((host, int(port))) for _ in range(LEFT_OPEN)]
        try:  # accepted in order: the worker holds every earlier connection when it takes ours
            answer = httpx.post(f"{url}/v1/predict", json=SAMPLE_REQUEST, timeout=10)
        finally:
            for conn in left:
                conn.close()
    assert len(left) == LEFT_OPEN
    assert answer.status_code == 200, answer.text
