"""The worker's models: a ``core.models.ModelWatcher`` following the registry's aliases (or
the fixed MODEL_DIR), checked off the event loop.

Requests take ``watcher.current`` once and keep that object, so a swap never changes a model
under an in-flight request. Each worker checks every MODEL_RELOAD_INTERVAL_S, and
``POST /admin/reload`` forces a check in the worker that serves it; a refused candidate
(checksum or contract) leaves the old models serving and shows in ``/ready`` and /metrics.
"""

from __future__ import annotations

import asyncio
import logging

from core.model_follow import FollowMetrics, follow
from core.models import ModelWatcher
from core.predictor import Models
from serving.metrics import Metrics

log = logging.getLogger(__name__)


class ServedModels:
    """The watcher and its metrics; ``current`` is what a request scores with."""

    def __init__(self, watcher: ModelWatcher, metrics: Metrics) -> None:
        self.watcher = watcher
        self._metrics = metrics
        self._follow = FollowMetrics("serving", metrics.registry)
        self._follow.show(watcher)

    @property
    def current(self) -> Models:
        return self.watcher.current

    @property
    def refused(self) -> str | None:
        return self.watcher.refused

    async def check(self, force: bool = False) -> bool:
        """Re-resolve the aliases in a thread (the registry client blocks); True if swapped."""
        before = self.watcher.refused
        swapped = await asyncio.to_thread(follow, self.watcher, self._follow, force)
        refused = self.watcher.refused is not None and self.watcher.refused != before
        outcome = "ok" if swapped else "refused" if refused else "unchanged"
        self._metrics.reloads.labels(outcome).inc()
        return swapped

    async def watch(self, interval_s: float) -> None:
        """Check every ``interval_s`` until cancelled; an unreachable registry keeps the old."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.check()
            except Exception as exc:
                log.warning("model check failed, still serving %s: %s", self.version, exc)

    @property
    def version(self) -> str:
        return str(self.watcher.current.champion.version)
