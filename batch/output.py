"""Date partitions that appear whole or not at all, on a local disk or an object store.

The contract every engine (DuckDB, Spark) writes through and every reader resolves by:

* **Layout.** A day is ``<root>/date=YYYY-MM-DD/_manifest.json``. The manifest's
  ``files`` name the day's parquet files (``name`` relative to ``date=D/``, and ``rows``)
  and ``rows_out`` their total. A day without a complete manifest does not exist.
* **Readers** resolve a day only through its manifest: ``resolve`` (the manifest and the
  files' locations), ``read_day`` (the rows), ``is_complete`` (manifest, files and rows
  agree). Never list ``date=D/`` to find the rows: on an object store it also holds the
  files of a run in progress and of the run just replaced.
* **Writers:** ``stage = begin(root, day, run_id)`` (cleans up after a killed run of the
  day), write ``part-*.parquet`` files into ``stage.directory`` (``stage.write_table``,
  or any engine's own writer, e.g. Spark's ``df.write.parquet(storage.s3a(...))``), then
  ``stage.commit(manifest)`` with ``files`` named relative to ``stage.directory``
  (``stage.written()`` lists them). Nothing is visible to readers before ``commit``.
* **Local root:** the run writes ``.tmp-date=D-<run>/`` and ``commit`` swaps it for
  ``date=D/`` with one ``renameat2(RENAME_EXCHANGE)`` (manifest inside), so even a reader
  that globs ``date=D/part-*.parquet`` sees one whole day. Where the kernel lacks the
  exchange, the old partition is renamed aside first and ``recover`` puts it back if the
  process dies between the two renames.
* **``s3://`` root:** an object store has no rename, so the run writes
  ``date=D/run=<run>/part-*.parquet`` and ``commit`` PUTs the manifest last: one PUT is
  atomic, so readers see the old day or the new one. Then runs other than the new one and
  the one it replaced are deleted (a reader that resolved the previous manifest a moment
  ago can still finish), and ``begin`` deletes whatever a killed run left.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from core import storage
from core.cli import UserError

MANIFEST = "_manifest.json"
PART_PREFIX = "part-"
RUN_PREFIX = "run="
READ_ATTEMPTS = 3  # a reader racing two commits re-resolves; more means something is wrong
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def partition(root: str | Path, day: date) -> str:
    """The location of ``day``'s partition under ``root`` (local path or ``s3://``)."""
    return storage.join(str(root), f"date={day.isoformat()}")


def partition_dir(root: Path, day: date) -> Path:
    return root / f"date={day.isoformat()}"


def staging_dir(root: Path, day: date, run_id: str) -> Path:
    return root / f".tmp-date={day.isoformat()}-{run_id}"


@dataclass(frozen=True)
class Stage:
    """One run's uncommitted output for one day; see the module docstring for the contract."""

    root: str
    day: date
    run_id: str

    @property
    def partition(self) -> str:
        return partition(self.root, self.day)

    @property
    def directory(self) -> str:
        """Where this run's ``part-*.parquet`` files go."""
        if storage.is_s3(self.root):
            return storage.join(self.partition, RUN_PREFIX + self.run_id)
        return str(staging_dir(Path(self.root), self.day, self.run_id))

    def location(self, file_name: str) -> str:
        return storage.join(self.directory, file_name)

    def write_table(self, file_name: str, table: pa.Table) -> None:
        fs, path = storage.filesystem(self.location(file_name))
        pq.write_table(table, path, filesystem=fs)

    def written(self) -> list[str]:
        """Names of the part files in ``directory`` (whoever wrote them), sorted."""
        return [n for n in map(storage.name, storage.list_files(self.directory)) if _is_part(n)]

    def commit(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Make the day readers resolve this run's files; returns the manifest as written."""
        if not storage.is_s3(self.root):
            staging = Path(self.directory)
            write_manifest(staging, manifest)
            publish_partition(staging, partition_dir(Path(self.root), self.day), self.run_id)
            return manifest
        prefix = RUN_PREFIX + self.run_id + "/"
        files = [f | {"name": prefix + f["name"]} for f in manifest.get("files", [])]
        previous = read_manifest(self.partition)
        written = manifest | {"files": files}
        write_manifest(self.partition, written)  # the commit point: one PUT
        keep = {self.run_id, *_runs_named(previous)}
        _delete_runs(self.partition, keep)
        return written


def begin(root: str | Path, day: date, run_id: str) -> Stage:
    """Clean up after a killed run of ``day`` and open this run's staging location."""
    stage = Stage(storage.as_location(root), day, run_id)
    recover(stage.root, day)
    if not storage.is_s3(stage.root):
        Path(stage.directory).mkdir(parents=True)
    return stage


def check_writable(root: str | Path) -> None:
    """Fail before any work if the output root cannot take a new partition."""
    location = storage.as_location(root)
    probe = storage.join(location, f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        if storage.is_s3(location):
            storage.write_bytes(probe, b"")
            storage.filesystem(probe)[0].delete_file(storage.filesystem(probe)[1])
            return
        Path(location).mkdir(parents=True, exist_ok=True)
        Path(probe).mkdir()
        Path(probe).rmdir()
    except OSError as exc:
        reason = exc.strerror or str(exc).splitlines()[0]
        raise UserError(f"output location {location} is not writable ({reason})") from exc


def recover(root: str | Path, day: date) -> None:
    """Undo what a killed run of ``day`` left: staging, an old partition set aside, or (on an
    object store) run directories the manifest does not name."""
    if storage.is_s3(root):
        day_location = partition(root, day)
        _delete_runs(day_location, set(_runs_named(read_manifest(day_location))))
        return
    root = Path(root)
    final = partition_dir(root, day)
    for aside in sorted(root.glob(f".old-date={day.isoformat()}-*")):
        if not final.exists():
            aside.rename(final)
        else:
            shutil.rmtree(aside)
    for staging in root.glob(f".tmp-date={day.isoformat()}-*"):
        shutil.rmtree(staging)


def _runs_named(manifest: dict[str, Any] | None) -> list[str]:
    names = [f["name"] for f in (manifest or {}).get("files", [])]
    return sorted({n.split("/", 1)[0][len(RUN_PREFIX) :] for n in names if "/" in n})


def _delete_runs(day_location: str, keep: set[str]) -> None:
    for run in storage.list_dirs(day_location):
        if run.startswith(RUN_PREFIX) and run[len(RUN_PREFIX) :] not in keep:
            storage.delete_dir(storage.join(day_location, run))


def publish_partition(staging: Path, final: Path, run_id: str) -> None:
    """Atomically replace ``final`` with ``staging`` (local directories)."""
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


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> None:
    """Write (or atomically rewrite) the manifest of a partition: one PUT on S3."""
    data = (json.dumps(manifest, indent=2, default=str) + "\n").encode()
    storage.write_bytes(storage.join(str(directory), MANIFEST), data)


def read_manifest(directory: str | Path) -> dict[str, Any] | None:
    try:
        loaded: dict[str, Any] = json.loads(
            storage.read_bytes(storage.join(str(directory), MANIFEST))
        )
    except (OSError, ValueError):
        return None
    return loaded


@dataclass(frozen=True)
class Resolved:
    """A committed day: its manifest and the locations of the files it names."""

    manifest: dict[str, Any]
    files: list[str]


def resolve(root: str | Path, day: date) -> Resolved | None:
    """The committed day through its manifest, or None if the day has no complete one."""
    location = partition(root, day)
    manifest = read_manifest(location)
    if not manifest or manifest.get("status") != "complete":
        return None
    return Resolved(manifest, [storage.join(location, f["name"]) for f in manifest["files"]])


def read_day(root: str | Path, day: date, columns: list[str] | None = None) -> pa.Table | None:
    """The day's rows as committed (None: no committed day)."""
    read = read_committed(root, day, columns)
    return None if read is None else read[1]


def read_committed(
    root: str | Path, day: date, columns: list[str] | None = None
) -> tuple[Resolved, pa.Table] | None:
    """The committed day and its rows, read through one manifest; re-resolves if a newer
    commit removed a file mid-read."""
    for attempt in range(READ_ATTEMPTS):
        resolved = resolve(root, day)
        if resolved is None:
            return None
        if not resolved.files:  # an empty day: committed, with no rows
            return resolved, pa.table({c: pa.array([], pa.null()) for c in columns or []})
        try:
            return resolved, storage.dataset(resolved.files).to_table(columns=columns)
        except FileNotFoundError:
            if attempt == READ_ATTEMPTS - 1:
                raise
    return None


def is_complete(directory: str | Path) -> bool:
    """The partition has its manifest, and its files hold exactly what the manifest lists."""
    location = str(directory)
    manifest = read_manifest(location)
    if not manifest or manifest.get("status") != "complete":
        return False
    names = sorted(f["name"] for f in manifest.get("files", []))
    folders = {"", *(n.rpartition("/")[0] for n in names)}
    on_disk = sorted(
        storage.join(folder, storage.name(f)) if folder else storage.name(f)
        for folder in folders
        for f in storage.list_files(storage.join(location, folder) if folder else location)
        if _is_part(storage.name(f))
    )
    if on_disk != names:
        return False
    try:
        rows = sum(_rows(storage.join(location, n)) for n in names)
    except OSError:
        return False
    return bool(rows == manifest.get("rows_out"))


def _rows(location: str) -> int:
    fs, path = storage.filesystem(location)
    return int(pq.read_metadata(path, filesystem=fs).num_rows)


def _is_part(file_name: str) -> bool:
    return file_name.startswith(PART_PREFIX) and file_name.endswith(".parquet")
