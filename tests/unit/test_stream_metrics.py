"""The stream's periodic figures: one JSON log line and a Prometheus textfile."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from streaming.metrics import StreamMetrics


def test_report_logs_and_writes_the_textfile(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    textfile = tmp_path / "stream.prom"
    metrics = StreamMetrics(interval_s=0, textfile=textfile)
    metrics.add("events_in", 10)
    metrics.add("dead_letters_late")
    with caplog.at_level(logging.INFO, logger="streaming.metrics"):
        metrics.observe("write_ms", 2.5)
    assert '"dead_letters_late": 1' in caplog.text
    assert '"events_in": 10' in caplog.text
    body = textfile.read_text()
    assert "fraud_stream_write_ms 2.5" in body
    assert "fraud_stream_events_per_s" in body
