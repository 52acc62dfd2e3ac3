"""The parity run's own Feast project: a dataset lined up so every mode can see the same inputs.

From a generated dataset it keeps the last full profile day, drops the profile snapshot
taken at that day's end (it is computed from the very events being scored, so no mode may
see it), and shifts every timestamp by one offset so the day ends a moment ago: the
online store's maximum ages (the views' TTLs) then hold for every sampled event. The
project gets a name of its own (Redis keys carry it) and a key TTL, so it shares a Redis
database with anything without touching it and leaves nothing behind for long.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from batch.aggregates import backfill_windows
from core.aggregations import WINDOWS
from core.cli import UserError
from datagen.generate import PUBLISHED_SCORE_SCHEMA, DataFiles
from harness.workspace import Workspace, create

KEY_TTL_S = 6 * 3600
DAY = timedelta(days=1)
MAX_WINDOW = max(w.window for w in WINDOWS)


@dataclass(frozen=True)
class ParityWorkspace(Workspace):
    """The parity run's workspace and the events it lines up."""

    project: str
    history: pd.DataFrame  # every transaction of the project, shifted (the reference's input)
    sample: pd.DataFrame  # the events scored four ways, in event-time order
    warmup: pd.DataFrame  # replayed first, so the stream's windows reach back far enough
    snapshot: datetime  # the profile snapshot the online store holds


def build(
    source: Path,
    model_dir: Path,
    root: Path,
    redis_url: str,
    now: datetime,
    span: timedelta = timedelta(hours=20),
    users: int | None = None,
    late_snapshot: bool = False,
) -> ParityWorkspace:
    """A workspace under ``root`` from the dataset in ``source`` (datagen's files).

    ``late_snapshot`` keeps the day-end profile snapshot and serves it online, as if the
    daily profile job had already run: the online modes then read profiles newer than the
    point-in-time ones, a mismatch class the report must explain.
    """
    if span > DAY:
        raise UserError("the sample must fit in one profile day (span <= 24 h)")
    files = DataFiles.in_dir(source)
    if not (model_dir / "manifest.json").exists():
        raise UserError(f"no model in {model_dir}; run `python -m training` first")
    tx = pd.read_parquet(files.transactions)
    user_profile = pd.read_parquet(files.user_profile)
    merchant_profile = pd.read_parquet(files.merchant_profile)
    if users is not None:
        tx = tx[tx.user_id < users]
        user_profile = user_profile[user_profile.user_id < users]
    end = user_profile.event_timestamp.max()  # the last snapshot: the data's end
    snapshot = end - DAY
    tx = tx[tx.event_timestamp < end]
    online_snapshot = end if late_snapshot else snapshot
    user_profile = user_profile[user_profile.event_timestamp <= online_snapshot]
    merchant_profile = merchant_profile[merchant_profile.event_timestamp <= online_snapshot]
    # Whole seconds keep every timestamp's microseconds, hence the window arithmetic, exact.
    shift = pd.Timedelta(seconds=int((now - timedelta(minutes=2) - end).total_seconds()))
    tx = _shifted(tx, shift, "event_timestamp")
    user_profile = _shifted(user_profile, shift, "event_timestamp", "created_timestamp")
    merchant_profile = _shifted(merchant_profile, shift, "event_timestamp", "created_timestamp")
    snapshot, end, online_snapshot = snapshot + shift, end + shift, online_snapshot + shift

    repo_root = root / "workspace"
    data = repo_root / "data"
    base = create(repo_root, redis_url, redis_timeout_ms=2000, model_dir=data / "model")
    project = f"parity_{uuid.uuid4().hex[:8]}"
    _configure(base.repo / "feature_store.yaml", project)
    data.mkdir()
    out = DataFiles.in_dir(data)
    tx.to_parquet(out.transactions, index=False)
    user_profile.to_parquet(out.user_profile, index=False)
    merchant_profile.to_parquet(out.merchant_profile, index=False)
    pq.write_table(PUBLISHED_SCORE_SCHEMA.empty_table(), out.published_scores)
    backfill_windows(out.transactions, data / "user_txn_windows.parquet")
    shutil.copytree(model_dir, data / "model")

    history = tx.drop(columns=["is_fraud"]).sort_values(["event_timestamp", "transaction_id"])
    history = history.reset_index(drop=True)
    start = max(snapshot, end - span)
    sample = history[history.event_timestamp >= start].reset_index(drop=True)
    warmup = _warmup(history, sample)
    ws = ParityWorkspace(base.settings, base.env, project, history, sample, warmup, online_snapshot)
    ws.feast("apply")
    minute = timedelta(minutes=1)
    ws.materialize(
        online_snapshot - minute, online_snapshot + minute, "user_profile", "merchant_profile"
    )
    return ws


def _shifted(frame: pd.DataFrame, shift: pd.Timedelta, *columns: str) -> pd.DataFrame:
    frame = frame.copy()
    for column in columns:
        frame[column] = (frame[column] + shift).astype("datetime64[us, UTC]")  # the file schema
    return frame


def _configure(yaml: Path, project: str) -> None:
    """Its own project (Redis keys include it) whose online keys expire on their own."""
    text = yaml.read_text().replace("project: fraud_scoring", f"project: {project}")
    text = text.replace("  redis_type:", f"  key_ttl_seconds: {KEY_TTL_S}\n  redis_type:")
    if project not in text or "key_ttl_seconds" not in text:
        raise RuntimeError(f"unexpected layout of {yaml}")
    yaml.write_text(text)


def _warmup(history: pd.DataFrame, sample: pd.DataFrame) -> pd.DataFrame:
    """The sampled users' events the widest window reaches back to, plus each one's last
    event before that (the first sampled event's ``secs_since_last_txn`` needs it)."""
    start = sample.event_timestamp.min()
    before = history[history.user_id.isin(sample.user_id.unique())]
    before = before[before.event_timestamp < start]
    inside = before.event_timestamp >= start - MAX_WINDOW
    last_outside = before[~inside].groupby("user_id").tail(1)
    warm = pd.concat([before[inside], last_outside]).sort_values(
        ["event_timestamp", "transaction_id"]
    )
    return warm.reset_index(drop=True)
