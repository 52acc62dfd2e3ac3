"""The current model, swapped atomically when a new artifact appears.

Requests take ``holder.predictor`` once and keep that object, so a reload never
changes a model under an in-flight request. Each worker polls the manifest (one
``stat`` per interval) and ``POST /admin/reload`` forces a check in the worker that
serves it; a bad artifact is refused and the old model keeps serving.
"""

from __future__ import annotations

import logging
from pathlib import Path

from feast import FeatureService

from core.predictor import MANIFEST_FILE, Predictor

log = logging.getLogger(__name__)


class ModelHolder:
    def __init__(self, model_dir: Path, service: FeatureService) -> None:
        self._dir = model_dir
        self._service = service
        self._stamp = self._manifest_stamp()
        self.predictor = Predictor.load(model_dir, service)

    def _manifest_stamp(self) -> tuple[int, int] | None:
        try:
            st = (self._dir / MANIFEST_FILE).stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def reload_if_changed(self, force: bool = False) -> bool:
        """Load the artifact if its manifest changed (or ``force``); True if swapped."""
        stamp = self._manifest_stamp()
        if stamp is None or (stamp == self._stamp and not force):
            return False
        fresh = Predictor.load(self._dir, self._service)  # raises: the old model stays
        self._stamp = stamp
        if fresh.manifest.checksum == self.predictor.manifest.checksum:
            return False
        old, self.predictor = self.predictor.version, fresh
        log.info("model reloaded: %s -> %s", old, fresh.version)
        return True
