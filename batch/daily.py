"""``python -m batch daily [--date D]``: the nightly chain for one day, in order, re-runnable.

1. ``materialize``: the batch views (those Feast loads from their batch source; not the
   stream-pushed windows, not the published scores) materialized incrementally up to the
   midnight after the day, which holds the snapshot built from the day's transactions. A
   view never materialized starts at that midnight minus its TTL: Feast's own default start
   (now minus the TTL) would skip a past day's snapshots.
2. ``score``: the day scored into its partition (``batch.score.run_score``).
3. ``publish``: each user's latest score of the day, offline and online (``batch.publish``).
4. ``skew``: the day's logged served vectors (``FEATURE_LOG_DIR``) against point-in-time
   offline values (``batch.skew``); with none logged, recorded as skipped.

One run manifest per day, ``<data>/runs/daily/<date>.json``, is rewritten atomically before
and after every step. A step it records as done (or skipped) is not run again: a second run
of a finished day does nothing, and a killed run resumes at the step it was in. Each step
is idempotent on its own (a re-run replaces what it wrote), so resuming one is safe.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from datetime import time as dt_time
from pathlib import Path
from typing import Any

from batch import output, skew
from batch.publish import publish_scores
from batch.score import ScoreOptions, output_root, run_score
from core.cli import UserError
from core.settings import Settings
from core.store import feature_service, open_store

log = logging.getLogger(__name__)
DONE = ("done", "skipped")
SKEW_SAMPLE = 10_000


@dataclass(frozen=True)
class Day:
    """One chain run's inputs."""

    settings: Settings
    day: date
    runs: Path  # where the manifests live

    @property
    def manifest(self) -> Path:
        return self.runs / f"{self.day.isoformat()}.json"

    @property
    def next_midnight(self) -> datetime:
        return datetime.combine(self.day + timedelta(days=1), datetime.min.time(), timezone.utc)


def add_parser(sub: Any, parse_date: Callable[[str], date]) -> None:
    daily = sub.add_parser(
        "daily", help="the nightly chain: materialize, score, publish, skew (re-runnable)"
    )
    daily.add_argument("--date", type=parse_date, help="YYYY-MM-DD, UTC (default: yesterday)")
    daily.add_argument(
        "--runs", type=Path, help="run manifests directory (default: <data>/runs/daily)"
    )
    daily.add_argument(
        "--force", action="store_true", help="run every step again, even those recorded done"
    )
    daily.add_argument(
        "--at",
        type=clock_time,
        help="HH:MM UTC: run yesterday's chain now, then every day at this time, forever"
        " (the scheduler of a container without cron)",
    )


def clock_time(text: str) -> dt_time:
    try:
        return datetime.strptime(text, "%H:%M").time()
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid time {text!r}, expected HH:MM") from None


def seconds_until(now: datetime, at: dt_time) -> float:
    """From ``now`` to the next ``at`` (UTC) strictly after it."""
    nxt = datetime.combine(now.date(), at, timezone.utc)
    if nxt <= now:
        nxt += timedelta(days=1)
    return (nxt - now).total_seconds()


def main(args: argparse.Namespace, settings: Settings) -> int:
    if args.at is None:
        return once(args, settings, args.date)
    while True:  # a failed run is logged and resumed by the next one
        try:
            once(args, settings, None)
        except Exception as exc:
            log.error("daily run failed (the next run resumes it): %s", exc)
        wait = seconds_until(datetime.now(timezone.utc), args.at)
        log.info("next daily run in %.0f s", wait)
        time.sleep(wait)


def once(args: argparse.Namespace, settings: Settings, day: date | None) -> int:
    day = day or datetime.now(timezone.utc).date() - timedelta(days=1)
    runs = args.runs or settings.data_dir / "runs" / "daily"
    manifest = run_daily(Day(settings, day, runs), force=args.force)
    for name, step in manifest["steps"].items():
        print(f"{day} {name}: {step['status']}  {_brief(step)}")
    print(f"manifest: {runs / f'{day.isoformat()}.json'}")
    return 0


def _brief(step: dict[str, Any]) -> str:
    shown = {k: v for k, v in step.items() if k not in ("status", "started_at", "run_id")}
    return json.dumps(shown, default=str)[:300]


def run_daily(job: Day, force: bool = False) -> dict[str, Any]:
    """Run the steps not yet recorded done; returns the manifest."""
    job.runs.mkdir(parents=True, exist_ok=True)
    with _exclusive(job):
        manifest = read_manifest(job.manifest) or {"date": job.day.isoformat(), "steps": {}}
        if manifest.get("status") == "complete" and not force:
            log.info("%s: complete, nothing to do (%s)", job.day, job.manifest)
            return manifest
        run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
        manifest.setdefault("runs", []).append({"run_id": run_id, "started_at": _now()})
        manifest["status"] = "running"
        for name, step in STEPS.items():
            if manifest["steps"].get(name, {}).get("status") in DONE and not force:
                continue
            _record(job, manifest, name, {"status": "running", "run_id": run_id})
            began = time.monotonic()
            try:
                status, details = step(job)
            except Exception as exc:
                failed = {
                    "status": "failed",
                    "run_id": run_id,
                    "error": f"{type(exc).__name__}: {exc}",
                }
                manifest["status"] = "failed"
                _record(job, manifest, name, failed)
                raise
            duration = round(time.monotonic() - began, 3)
            entry = {"status": status, "run_id": run_id, "duration_s": duration, **details}
            _record(job, manifest, name, entry)
        manifest["status"] = "complete"
        _write(job.manifest, manifest)
        return manifest


def _record(job: Day, manifest: dict[str, Any], name: str, entry: dict[str, Any]) -> None:
    started = manifest["steps"].get(name, {}).get("started_at")
    if entry["status"] == "running" or started is None:
        started = _now()
    entry = json.loads(json.dumps(entry, default=str))  # as the file holds it
    manifest["steps"][name] = {"started_at": started, **entry} | (
        {} if entry["status"] == "running" else {"finished_at": _now()}
    )
    _write(job.manifest, manifest)


def read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return loaded


def _write(path: Path, manifest: dict[str, Any]) -> None:
    """Replace the manifest whole: a reader (or a kill) never sees half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(manifest, indent=2, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


@contextmanager
def _exclusive(job: Day) -> Iterator[None]:
    """One run per day at a time; the lock dies with its process, so a kill frees it."""
    with open(job.runs / f".{job.day.isoformat()}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"a daily run for {job.day} is already running") from None
        yield


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


Step = Callable[[Day], tuple[str, dict[str, Any]]]


def materialize(job: Day) -> tuple[str, dict[str, Any]]:
    store = open_store(job.settings)
    end = job.next_midnight
    views = [v for v in store.list_feature_views() if v.online and v.stream_source is None]
    if not views:
        raise UserError("no batch feature views in the registry; run `feast apply`")
    done: dict[str, Any] = {}
    for view in views:
        last = view.most_recent_end_time
        if last is not None and last.astimezone(timezone.utc) >= end:
            done[view.name] = {"already_to": last}
            continue
        if last is None:  # first run: back one TTL, as much as serving can use
            start = end - (view.ttl or timedelta(days=1))
            store.materialize(start, end, feature_views=[view.name])
        else:
            start = last
            store.materialize_incremental(end, feature_views=[view.name])
        done[view.name] = {"from": start, "to": end}
    return "done", {"views": done}


def score(job: Day) -> tuple[str, dict[str, Any]]:
    s = job.settings
    opts = ScoreOptions(
        day=job.day,
        engine=s.batch_engine,  # as `fraud-batch score` without --engine
        chunk_rows=s.batch_chunk_rows,
        workers=s.batch_workers,
    )
    manifest = run_score(s, opts)
    keep = ("rows_out", "rows_missing_features", "model_version", "empty")
    where = output.partition(output_root(s), job.day)
    return "done", {k: manifest[k] for k in keep} | {
        "score_run_id": manifest["run_id"],  # the partition's own manifest names it
        "partition": where,
    }


def publish(job: Day) -> tuple[str, dict[str, Any]]:
    users = publish_scores(open_store(job.settings), output_root(job.settings), job.day)
    return "done", {"published_users": users}


def skew_report(job: Day) -> tuple[str, dict[str, Any]]:
    logs = job.settings.feature_log_dir
    if logs is None or not any(logs.rglob("*.parquet")):
        return "skipped", {"reason": "no logged vectors", "logs": str(logs)}
    logged = skew.read_sample(logs, SKEW_SAMPLE, seed=0, day=job.day)
    if logged.empty:
        return "skipped", {"reason": "no logged vectors", "logs": str(logs)}
    store = open_store(job.settings)
    drift = skew.compare(store, feature_service(store), logged)
    report = job.runs / f"{job.day.isoformat()}.skew.json"
    body = {"logs": str(logs), "rows": len(logged), "features": [skew.as_json(d) for d in drift]}
    report.write_text(json.dumps(body, indent=2) + "\n")
    worst = max(drift, key=lambda d: d.share_differing)
    return "done", {
        "rows": len(logged),
        "worst_feature": worst.feature,
        "worst_share_differing": round(worst.share_differing, 6),
        "report": str(report),
    }


STEPS: dict[str, Step] = {
    "materialize": materialize,
    "score": score,
    "publish": publish,
    "skew": skew_report,
}
