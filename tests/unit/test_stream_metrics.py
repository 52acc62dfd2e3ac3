"""The stream's metrics: the batch-fed histogram equals prometheus_client's own, the
conventions (``_total``, ``_seconds``, reason as a label), the status line, and which port a
process of a Bytewax cluster serves."""

from __future__ import annotations

import logging
import socket
import sys

import httpx
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streaming.metrics import REASONS, BulkHistogram, StreamMetrics, process_id, serve

VALUES = [0.0, 0.05, 0.1, 0.1000001, 0.33, 0.95, 1.0, 1.5]  # on, between and past the bounds


def _lines(registry: CollectorRegistry, prefix: str) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_bulk_histogram_exposes_what_prometheus_histogram_does() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    buckets = (0.1, 0.5, 1.0)
    bulk = BulkHistogram("h", "doc", buckets, ["model_version"])
    ours.register(bulk)
    reference = Histogram("h", "doc", ["model_version"], buckets=buckets, registry=theirs)
    bulk.observe_many(VALUES[:3], "v1")
    bulk.observe_many(VALUES[3:], "v1")
    bulk.observe_many([], "v2")  # an empty batch makes no series
    for v in VALUES:
        reference.labels("v1").observe(v)
    expected = [line for line in _lines(theirs, "h_") if not line.startswith("h_created")]
    assert len(expected) == 6  # 4 buckets, count, sum
    assert _lines(ours, "h_") == expected


def test_conventions_and_the_status_line(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    metrics = StreamMetrics(interval_s=0, registry=registry)
    metrics.events.inc(10)
    metrics.dead_letters.labels("late").inc()
    metrics.step_seconds.labels("write").observe(0.002)
    metrics.model.info({"version": "abc", "checksum": "abc"})
    text = generate_latest(registry).decode()
    for reason in REASONS:  # every reason exists before its first dead letter
        assert f'stream_dead_letters_total{{reason="{reason}"}}' in text
    assert 'stream_dead_letters_total{reason="late"} 1.0' in text
    assert "stream_events_total 10.0" in text
    assert 'stream_step_duration_seconds_count{step="write"} 1.0' in text
    assert 'stream_model_info{checksum="abc",version="abc"} 1.0' in text
    with caplog.at_level(logging.INFO, logger="streaming.metrics"):
        metrics.maybe_report()
    assert '"dead_letters": {"late": 1.0}' in caplog.text
    assert '"events": 10.0' in caplog.text


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["flow"], {}, 0),
        (["flow", "-i", "2", "-a", "x;y;z"], {}, 2),
        (["flow", "--process-id", "1"], {}, 1),
        (["flow", "--process-id=3"], {}, 3),
        (["flow", "-i1"], {}, 1),
        (["flow"], {"BYTEWAX_PROCESS_ID": "4"}, 4),
        (["flow"], {"BYTEWAX_POD_NAME": "stream-5", "BYTEWAX_STATEFULSET_NAME": "stream"}, 5),
        (["flow", "-i", "1"], {"BYTEWAX_PROCESS_ID": "4"}, 1),  # the flag wins, as in bytewax.run
    ],
)
def test_process_id_is_found_as_bytewax_run_finds_it(
    argv: list[str], env: dict[str, str], expected: int
) -> None:
    assert process_id(argv, env) == expected


def _free_pair() -> int:
    """A port free together with the next one."""
    for _ in range(50):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no two adjacent free ports")


def test_process_i_serves_port_plus_i_and_a_taken_port_is_only_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    base = _free_pair()
    monkeypatch.setattr(sys, "argv", ["bytewax/run.py", "flow", "-i", "1", "-a", "a:1;b:2"])
    assert serve("127.0.0.1", base) == base + 1
    answer = httpx.get(f"http://127.0.0.1:{base + 1}/metrics", timeout=5)
    assert answer.status_code == 200 and "python_info" in answer.text
    with caplog.at_level(logging.WARNING, logger="streaming.metrics"):
        assert serve("127.0.0.1", base) is None  # taken: the flow goes on scoring
    assert f"stream metrics not served on 127.0.0.1:{base + 1}" in caplog.text
    assert serve("127.0.0.1", 0) is None  # off
