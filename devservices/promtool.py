"""Prometheus' ``promtool``, to check the alert rules (``deploy/prometheus/alerts.yml``).

Used from PATH if there; otherwise taken from Debian's ``prometheus`` package, downloaded
with ``apt-get download`` and unpacked (never installed, so no server starts) into the
cache beside the Kafka jars.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from core.settings import Settings

from ._common import ServiceError

PACKAGE = "prometheus"


def cached_promtool(settings: Settings) -> Path:
    return settings.kafka_cache_dir.parent / PACKAGE / "usr" / "bin" / "promtool"


def ensure_promtool(settings: Settings) -> Path:
    """The promtool on PATH, or the cached one, unpacked from Debian's package if missing."""
    found = shutil.which("promtool")
    if found:
        return Path(found)
    target = cached_promtool(settings)
    if target.exists():
        return target
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise ServiceError(
            "promtool not found: install Prometheus (Debian: apt-get install prometheus)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run(
            ["apt-get", "download", PACKAGE], cwd=tmp, capture_output=True, text=True
        )
        debs = list(Path(tmp).glob(f"{PACKAGE}_*.deb"))
        if got.returncode != 0 or not debs:
            raise ServiceError(f"apt-get download {PACKAGE} failed: {got.stderr.strip()}")
        root = target.parents[2]
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True)
    if not target.exists():
        raise ServiceError(f"{PACKAGE} package has no {target.relative_to(target.parents[2])}")
    return target
