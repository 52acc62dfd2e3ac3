"""The dashboard and the alert rules name only metrics the running services export.

The real stream (``fraud-stream``, tailing Kafka), the real API (``python -m serving``) and
the real nightly job (its manifest is what the API exports) run; their /metrics are scraped
over HTTP, and every metric name in ``deploy/grafana/dashboards/*.json`` and
``deploy/prometheus/alerts.yml`` must be among the scraped ones. The rules also pass
``promtool check rules``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from core.settings import PROJECT_ROOT, Settings
from devservices.promtool import ensure_promtool
from harness.flow import tailing
from harness.kafka import Topics, encoded, produce
from harness.servers import SAMPLE_REQUEST, free_port, launched, serving_command
from harness.stream import recent_events
from tests.conftest import Stack

pytestmark = pytest.mark.integration

DEPLOY = PROJECT_ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
MADE_BY_PROMETHEUS = {"up"}  # per scrape target, not exported by one
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
PARTITIONS = 2
TIMEOUT_S = 240  # bounds a hang only: start-up takes minutes on a loaded 2-core box


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not its functions, labels or keywords)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)  # label matchers and ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    words = re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", expr)
    return {m[1] for m in words if m[2] is None and m[1] not in PROMQL_WORDS}


def referenced() -> dict[str, set[str]]:
    """Metric name -> where it is used (dashboard panel titles, alert names)."""
    uses: dict[str, set[str]] = {}
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                for name in metric_names(target["expr"]):
                    uses.setdefault(name, set()).add(f"{path.name}: {panel['title']}")
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            for name in metric_names(rule["expr"]):
                uses.setdefault(name, set()).add(f"alert {rule['alert']}")
    return uses


def scrape(url: str) -> list[tuple[str, str]]:
    """(sample name, the sample's line) of every sample at ``url``."""
    text = httpx.get(url, timeout=5).text
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return [(re.split(r"[{ ]", line, maxsplit=1)[0], line) for line in lines]


def wait_for(what: str, flow: subprocess.Popen[bytes], url: str, events: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not caught_up(url, events):
        assert flow.poll() is None, f"the stream exited ({flow.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {TIMEOUT_S} s"
        time.sleep(0.5)


@contextmanager
def stream(ready: Stack, log: Path) -> Iterator[tuple[str, int, subprocess.Popen[bytes]]]:
    """A tailing stream with /metrics on a free port, fed recent events and a bad one;
    yields the metrics URL, the number of good events and the process."""
    bootstrap = ready.settings.kafka_bootstrap_servers
    topics = Topics.created("obs", bootstrap, PARTITIONS)
    events = recent_events(ready.settings, users=20, hours=3, end=datetime.now(timezone.utc))
    produce(bootstrap, topics.transactions, [*encoded(events), (b"1", b"{nope")], PARTITIONS)
    port = free_port()
    env = ready.env | topics.env() | {"STREAM_METRICS_PORT": str(port)}
    with tailing(env, log) as flow:
        yield f"http://127.0.0.1:{port}/metrics", len(events), flow


@contextmanager
def api_process(env: dict[str, str], log: Path) -> Iterator[str]:
    """``python -m serving`` (harness.servers.serving_process, with this test's start bound)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with launched(serving_command(port), f"{url}/health", log, env, PROJECT_ROOT, TIMEOUT_S):
        yield url


def caught_up(url: str, events: int) -> bool:
    """Every event scored, and a lag per partition (it appears once a partition is read)."""
    try:
        samples = scrape(url)
    except httpx.TransportError:
        return False
    lags = [name for name, _ in samples if name == "bytewax_kafka_consumer_lag"]
    scored = dict(samples).get("stream_scores_total", "x 0").split()[-1]
    return float(scored) >= events and len(lags) == PARTITIONS


def nightly_job(ready: Stack, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """``python -m batch score`` for yesterday on 300 of its rows, 20 of them of unknown
    users (missing features, counted); the manifest it writes is what the API exports."""
    tx = pd.read_parquet(ready.settings.data_dir / "transactions.parquet")
    yesterday = (datetime.now(timezone.utc) - timedelta(days=1)).date()
    rows = tx[tx.event_timestamp.dt.date == yesterday].head(300).copy()
    rows.loc[rows.index[:20], "user_id"] += 10**12
    entities = tmp_path / "entities.parquet"
    rows.to_parquet(entities)
    root = tmp_path / "scores"
    command = ["score", "--entities", str(entities), "--output", str(root)]
    job = subprocess.Popen(
        [sys.executable, "-m", "batch", *command],
        cwd=PROJECT_ROOT,
        env=ready.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    return job, root


def test_dashboard_and_rules_name_only_metrics_the_api_and_the_stream_export(
    ready: Stack, tmp_path: Path
) -> None:
    batch, scores_root = nightly_job(ready, tmp_path)
    api_env = ready.env | {
        "BATCH_OUTPUT_DIR": str(scores_root),
        "SERVING_MAX_AGE_SECONDS": json.dumps({"merchant_profile": 1}),  # stale: counted
    }
    with (
        stream(ready, tmp_path / "stream.log") as (stream_url, events, flow),
        api_process(api_env, tmp_path / "serving.log") as api,
    ):
        unknown = SAMPLE_REQUEST | {"user_id": 10**13}  # missing features: counted
        for body, status in ((SAMPLE_REQUEST, 200), (unknown, 200), ({"user_id": "x"}, 422)):
            assert httpx.post(f"{api}/v1/predict", json=body, timeout=10).status_code == status
        output = batch.communicate(timeout=TIMEOUT_S)[0].decode()
        assert batch.returncode == 0, output
        api_samples = scrape(f"{api}/metrics")
        wait_for("scores for every event and a lag per partition", flow, stream_url, events)
        stream_samples = scrape(stream_url)

    exported = {name for name, _ in api_samples + stream_samples}
    uses = referenced()
    assert len(uses) >= 20, sorted(uses)  # the extraction found the dashboard's and rules' names
    missing = {name: sorted(where) for name, where in uses.items() if name not in exported}
    assert set(missing) <= MADE_BY_PROMETHEUS, missing

    lines = [line for _, line in stream_samples]
    assert 'stream_dead_letters_total{reason="bad_json"} 1.0' in lines
    assert f"stream_events_total {events + 1}.0" in lines
    lags = {
        re.search(r'partition="(\d+)"', line)[1]  # type: ignore[index]
        for name, line in stream_samples
        if name == "bytewax_kafka_consumer_lag"
    }
    assert lags == {str(p) for p in range(PARTITIONS)}
    version = next(line for line in lines if line.startswith("stream_model_info"))
    assert 'version="' in version and 'checksum="' in version


def test_rules_and_config_pass_promtool_and_stale_features_alert_before_the_ttl(
    tmp_path: Path,
) -> None:
    """``promtool check rules``, ``check config`` (rule path as compose mounts it, here
    local), and ``test rules``: the alerts_test.yml cases on FeatureViewNearTTL/TTLImminent."""
    promtool = str(ensure_promtool(Settings()))
    config = yaml.safe_load(PROMETHEUS.read_text())
    config["rule_files"] = [str(ALERTS)]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    rules = sum(len(g["rules"]) for g in yaml.safe_load(ALERTS.read_text())["groups"])
    for args, expect in (
        (["check", "rules", str(ALERTS)], f"SUCCESS: {rules} rules found"),
        (["check", "config", str(local)], f"SUCCESS: {rules} rules found"),
        (["test", "rules", str(ALERTS_TEST)], "SUCCESS"),
    ):
        out = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=ALERTS.parent)
        assert out.returncode == 0 and expect in out.stdout, (args, out.stdout + out.stderr)
