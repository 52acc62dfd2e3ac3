"""The rollout proof's switch arithmetic, and how a mode's follow loop turns watcher checks
into refusal and version metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

from prometheus_client import CollectorRegistry

from core.model_follow import FollowMetrics, follow
from core.models import ModelWatcher
from verify.rollout import switch


def test_switch_is_first_new_and_last_old_answer_after_the_change() -> None:
    stamped = [(9.0, "v1"), (10.5, "v1"), (11.0, "v2"), (11.25, "v1"), (12.0, "v2"), (20.0, "v1")]
    got = switch(stamped, at=10.0, until=15.0, new="v2")
    assert got.first_new_s == 1.0 and got.settled_s == 1.25


def test_switch_that_never_happens_has_no_first_new_answer() -> None:
    got = switch([(11.0, "v1")], at=10.0, until=15.0, new="v2")
    assert got.first_new_s is None and got.settled_s == 1.0


@dataclass
class Watcher:
    """Stands in for ModelWatcher: each check applies the next scripted outcome."""

    script: list[tuple[bool, str | None, str]]  # swapped, refused, champion version
    refused: str | None = None
    current: Any = field(default=None)

    def __post_init__(self) -> None:
        self.current = _models("v1")

    def check(self, force: bool = False) -> bool:
        swapped, self.refused, version = self.script.pop(0)
        self.current = _models(version)
        return swapped


def _models(version: str) -> Any:
    return SimpleNamespace(champion=SimpleNamespace(version=version), challenger=None)


def test_follow_counts_each_refusal_once_and_shows_the_version_in_use() -> None:
    registry = CollectorRegistry()
    metrics = FollowMetrics("test", registry)
    bad = "champion 3 refused: checksum"
    watcher = Watcher(
        [(False, bad, "v1"), (False, bad, "v1"), (True, None, "v2"), (False, bad, "v2")]
    )
    outcomes = [follow(cast(ModelWatcher, watcher), metrics) for _ in range(4)]
    assert outcomes == [False, False, True, False]

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("test_model_refusals_total") == 2  # refused, retried quietly, moved on, again
    assert value("test_model_refused") == 1
    assert value("test_model_version_info", role="champion", version="v2") == 1
    assert value("test_model_version_info", role="champion", version="v1") == 0
