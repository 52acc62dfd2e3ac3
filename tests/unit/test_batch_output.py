"""Atomic partition swaps, recovery after a kill, and the completeness check."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch import output
from core.cli import UserError

DAY = date(2025, 3, 1)


def make_partition(directory: Path, rows: int, run_id: str) -> None:
    directory.mkdir(parents=True)
    pq.write_table(pa.table({"x": list(range(rows))}), directory / "part-00000.parquet")
    manifest = {"status": "complete", "run_id": run_id, "rows_out": rows}
    output.write_manifest(directory, manifest | {"files": [{"name": "part-00000.parquet"}]})


def test_swap_replaces_an_old_partition(tmp_path: Path) -> None:
    final = output.partition_dir(tmp_path, DAY)
    make_partition(final, 3, "old")
    staging = output.staging_dir(tmp_path, DAY, "new")
    make_partition(staging, 5, "new")
    output.publish_partition(staging, final, "new")
    manifest = output.read_manifest(final)
    assert manifest is not None and manifest["run_id"] == "new"
    assert output.is_complete(final)
    assert [p.name for p in tmp_path.iterdir()] == [final.name]


def test_first_partition_is_a_plain_rename(tmp_path: Path) -> None:
    staging = output.staging_dir(tmp_path, DAY, "r1")
    make_partition(staging, 2, "r1")
    output.publish_partition(staging, output.partition_dir(tmp_path, DAY), "r1")
    assert output.is_complete(output.partition_dir(tmp_path, DAY))


def test_recover_after_a_kill_between_the_two_fallback_renames(tmp_path: Path) -> None:
    make_partition(tmp_path / f".old-date={DAY}-r2", 3, "r1")  # old set aside, new not in
    make_partition(output.staging_dir(tmp_path, DAY, "r2"), 4, "r2")
    output.recover(tmp_path, DAY)
    manifest = output.read_manifest(output.partition_dir(tmp_path, DAY))
    assert manifest is not None and manifest["run_id"] == "r1"
    assert [p.name for p in tmp_path.iterdir()] == [f"date={DAY}"]


def test_incomplete_partitions_are_detected(tmp_path: Path) -> None:
    part = output.partition_dir(tmp_path, DAY)
    make_partition(part, 3, "r1")
    assert output.is_complete(part)
    (part / "part-00001.parquet").write_bytes(b"")  # a file the manifest does not list
    assert not output.is_complete(part)
    (part / "part-00001.parquet").unlink()
    (part / output.MANIFEST).write_text("{")
    assert not output.is_complete(part)
    assert not output.is_complete(tmp_path / "missing")


def test_unwritable_output_is_a_user_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="not writable"):
        output.check_writable(blocker / "scores")


def test_a_stage_commits_and_readers_resolve_it_through_the_manifest(tmp_path: Path) -> None:
    stage = output.begin(tmp_path, DAY, "r1")
    assert output.resolve(tmp_path, DAY) is None  # nothing visible before the commit
    stage.write_table("part-00000.parquet", pa.table({"x": [1, 2]}))
    stage.write_table("part-00001.parquet", pa.table({"x": [3]}))
    assert stage.written() == ["part-00000.parquet", "part-00001.parquet"]
    files = [{"name": n, "rows": r} for n, r in zip(stage.written(), (2, 1), strict=True)]
    stage.commit({"status": "complete", "run_id": "r1", "rows_out": 3, "files": files})
    resolved = output.resolve(tmp_path, DAY)
    assert resolved is not None and resolved.manifest["run_id"] == "r1"
    names = ["part-00000.parquet", "part-00001.parquet"]
    assert resolved.files == [str(output.partition_dir(tmp_path, DAY) / n) for n in names]
    table = output.read_day(tmp_path, DAY)
    assert table is not None and table["x"].to_pylist() == [1, 2, 3]
    assert [p.name for p in tmp_path.iterdir()] == [f"date={DAY}"]


def test_an_empty_day_resolves_to_no_rows_and_a_missing_day_to_none(tmp_path: Path) -> None:
    stage = output.begin(tmp_path, DAY, "r1")
    stage.commit({"status": "complete", "run_id": "r1", "rows_out": 0, "files": []})
    table = output.read_day(tmp_path, DAY)
    assert table is not None and table.num_rows == 0
    assert output.is_complete(output.partition(tmp_path, DAY))
    assert output.read_day(tmp_path, date(2025, 3, 2)) is None


def test_object_store_manifests_name_their_runs() -> None:
    manifest = {"files": [{"name": "run=b/part-1.parquet"}, {"name": "run=a/part-0.parquet"}]}
    assert output._runs_named(manifest) == ["a", "b"]
    assert output._runs_named({"files": [{"name": "part-0.parquet"}]}) == []  # a local day
    assert output._runs_named(None) == []
