"""How a long-running mode (the API, the stream) follows the registry's aliases: one check of
its ``core.models.ModelWatcher``, and the outcome as Prometheus metrics.

A swap and a refusal are logged by the watcher; here they become
``<mode>_model_refusals_total``, ``<mode>_model_refused`` (1 while the newest candidate is
refused and the previous champion serves) and ``<mode>_model_version_info{role,version}``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from core.models import ModelWatcher
from core.predictor import Models

log = logging.getLogger(__name__)


class FollowMetrics:
    """One mode's model metrics, on that mode's registry."""

    def __init__(self, mode: str, registry: CollectorRegistry) -> None:
        self.refusals = Counter(
            f"{mode}_model_refusals",
            "Registry candidates refused (checksum or contract); the previous model serves",
            registry=registry,
        )
        self.refused = Gauge(
            f"{mode}_model_refused",
            "1 while the newest candidate is refused and the previous model serves",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.versions = Gauge(
            f"{mode}_model_version_info",
            "1 for each model version in use, by role (champion, challenger)",
            ["role", "version"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self._shown: dict[str, str] = {}

    def show(self, watcher: ModelWatcher) -> None:
        """The watcher's current versions and refusal state."""
        models = watcher.current
        now = {"champion": models.champion.version}
        if models.challenger is not None:
            now["challenger"] = models.challenger.version
        for role, version in self._shown.items():
            if now.get(role) != version:
                self.versions.labels(role, version).set(0)
        for role, version in now.items():
            self.versions.labels(role, version).set(1)
        self._shown = now
        self.refused.set(0 if watcher.refused is None else 1)


def follow(watcher: ModelWatcher, metrics: FollowMetrics, force: bool = False) -> bool:
    """One check of the aliases (blocking: run it off the scoring path); True if swapped."""
    before = watcher.refused
    swapped = watcher.check(force)
    if watcher.refused is not None and watcher.refused != before:
        metrics.refusals.inc()
    metrics.show(watcher)
    return swapped


def follow_forever(
    watcher: ModelWatcher,
    metrics: FollowMetrics,
    interval_s: float,
    on_swap: Callable[[Models], None] = lambda models: None,
) -> None:
    """A daemon thread calling ``follow`` every ``interval_s`` (the stream's); ``on_swap``
    gets the new models after each swap, and once now."""

    def loop() -> None:
        while True:
            time.sleep(interval_s)
            try:
                if follow(watcher, metrics):
                    on_swap(watcher.current)
            except Exception as exc:  # e.g. the registry unreachable: keep the current models
                log.warning("model check failed, still scoring with the current models: %s", exc)

    metrics.show(watcher)
    on_swap(watcher.current)
    threading.Thread(target=loop, name="model-follow", daemon=True).start()
