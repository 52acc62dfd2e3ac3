"""Date partitions that appear whole or not at all.

A run writes ``scores/.tmp-date=D-<run>/`` and then swaps it for ``scores/date=D/``
with one ``renameat2(RENAME_EXCHANGE)``, so a reader (or a SIGKILL) sees either the
old complete partition or the new complete one. Where the kernel lacks the
exchange, the old partition is renamed aside first and ``recover`` puts it back if
the process dies between the two renames. The manifest lives inside the
partition, so it is swapped in with the rows it describes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from core.cli import UserError

MANIFEST = "_manifest.json"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def partition_dir(root: Path, day: date) -> Path:
    return root / f"date={day.isoformat()}"


def staging_dir(root: Path, day: date, run_id: str) -> Path:
    return root / f".tmp-date={day.isoformat()}-{run_id}"


def check_writable(root: Path) -> None:
    """Fail before any work if the output root cannot take a new partition."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".probe-{os.getpid()}"
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise UserError(f"output location {root} is not writable ({exc.strerror})") from exc


def recover(root: Path, day: date) -> None:
    """Undo what a killed run of ``day`` left: staging dirs, or an old partition set aside."""
    final = partition_dir(root, day)
    for aside in sorted(root.glob(f".old-date={day.isoformat()}-*")):
        if not final.exists():
            aside.rename(final)
        else:
            shutil.rmtree(aside)
    for staging in root.glob(f".tmp-date={day.isoformat()}-*"):
        shutil.rmtree(staging)


def publish_partition(staging: Path, final: Path, run_id: str) -> None:
    """Atomically replace ``final`` with ``staging``."""
    _fsync_dir(staging)
    if not final.exists():
        staging.rename(final)
    elif _exchange(staging, final):
        shutil.rmtree(staging)  # now holds the old partition
    else:
        aside = final.with_name(f".old-{final.name}-{run_id}")
        final.rename(aside)
        staging.rename(final)
        shutil.rmtree(aside)
    _fsync_dir(final.parent)


def _exchange(a: Path, b: Path) -> bool:
    """Linux renameat2(RENAME_EXCHANGE): swap two paths in one step; False if unsupported."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the filesystem cannot exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write (or atomically rewrite) the manifest of a partition."""
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    tmp.replace(directory / MANIFEST)


def read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        loaded: dict[str, Any] = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return loaded


def is_complete(directory: Path) -> bool:
    """The partition has its manifest and exactly the files and rows the manifest lists."""
    manifest = read_manifest(directory)
    if not manifest or manifest.get("status") != "complete":
        return False
    files = manifest.get("files", [])
    on_disk = sorted(p.name for p in directory.glob("part-*.parquet"))
    if on_disk != sorted(f["name"] for f in files):
        return False
    try:
        rows = sum(pq.read_metadata(directory / f["name"]).num_rows for f in files)
    except OSError:
        return False
    return bool(rows == manifest.get("rows_out"))
