"""``python -m batch skew``: what the API served against point-in-time offline retrieval.

Reads a sample of the feature logs the API writes (``FEATURE_LOG_DIR``, Feast's log
schema, see ``serving.feature_log``), asks Feast's ``get_historical_features`` for the
same entities and request fields as of each logged request's time, and reports per
feature how often the two agree, how often either side is missing, and how far apart
the values are. Differences mean training/serving skew: an online store fed from
another source than the offline one, a materialization that lags, a stale stream.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from feast import FeatureService, FeatureStore
from feast.feature_logging import LOG_TIMESTAMP_FIELD

from batch.entities import day_bounds
from batch.pit import literal
from core.cli import UserError
from core.contract import ENTITY_KEYS, REQUEST_FIELDS
from core.duck import connect
from core.plan import plan_service
from core.settings import Settings
from core.store import feature_service, open_store

ROW = "log_row"


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    rows: int
    equal: int  # equal values, or both missing
    online_missing: int
    offline_missing: int
    mean_online: float | None
    mean_offline: float | None
    max_abs_diff: float | None  # over rows where both have a value

    @property
    def share_differing(self) -> float:
        return 1 - self.equal / self.rows if self.rows else 0.0


def add_parser(sub: Any) -> None:
    skew = sub.add_parser(
        "skew", help="compare logged online feature vectors with point-in-time offline values"
    )
    skew.add_argument("--logs", type=Path, help="feature log directory (default: FEATURE_LOG_DIR)")
    skew.add_argument("--sample", type=int, default=10_000, help="logged rows to compare")
    skew.add_argument("--seed", type=int, default=0, help="sampling seed")
    skew.add_argument("--json", type=Path, help="report file (default: <logs>/../skew.json)")
    skew.add_argument(
        "--fail-above",
        type=float,
        help="exit 1 if any feature differs in more than this share of rows (0..1)",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    logs = args.logs or settings.feature_log_dir
    if logs is None:
        raise UserError("no feature logs: pass --logs DIR or set FEATURE_LOG_DIR")
    if args.sample <= 0:
        raise UserError("--sample must be positive")
    store = open_store(settings)
    service = feature_service(store)
    logged = read_sample(logs, args.sample, args.seed)
    drift = compare(store, service, logged)
    print(format_table(drift, len(logged)))
    out = args.json or logs.resolve().parent / "skew.json"
    report = {"logs": str(logs), "rows": len(logged), "features": [as_json(d) for d in drift]}
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {out}")
    worst = max((d.share_differing for d in drift), default=0.0)
    return 1 if args.fail_above is not None and worst > args.fail_above else 0


def read_sample(logs: Path, rows: int, seed: int, day: date | None = None) -> pd.DataFrame:
    """A reproducible sample of logged rows (of one UTC ``day``'s requests, if given)."""
    files = sorted(logs.rglob("*.parquet"))
    if not files:
        raise UserError(f"no feature logs (*.parquet) under {logs}")
    paths = "[" + ", ".join(literal(str(f)) for f in files) + "]"
    con = connect()
    where = ""
    if day is not None:
        start, end = day_bounds(day)
        where = (
            f" WHERE {LOG_TIMESTAMP_FIELD} >= {literal(start)}"
            f" AND {LOG_TIMESTAMP_FIELD} < {literal(end)}"
        )
    sql = (
        f"SELECT * FROM read_parquet({paths}, union_by_name = true){where}"
        f" USING SAMPLE reservoir({int(rows)} ROWS) REPEATABLE ({int(seed)})"
    )
    frame = con.sql(sql).df()
    return frame.sort_values(LOG_TIMESTAMP_FIELD).reset_index(drop=True)


def compare(
    store: FeatureStore, service: FeatureService, logged: pd.DataFrame
) -> list[FeatureDrift]:
    """Per feature of the service: the logged (served) values against offline retrieval."""
    entities = logged[[*ENTITY_KEYS, *REQUEST_FIELDS]].copy()
    entities["event_timestamp"] = pd.to_datetime(logged[LOG_TIMESTAMP_FIELD], utc=True)
    entities[ROW] = np.arange(len(logged))
    offline = store.get_historical_features(entity_df=entities, features=service).to_df()
    offline = offline.set_index(ROW).sort_index()
    return [
        _drift(feature, _numbers(logged[f"{view}__{feature}"]), _numbers(offline[feature]))
        for view, feature, _ in plan_service(store, service).log_columns
    ]


def _numbers(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _drift(name: str, served: np.ndarray, truth: np.ndarray) -> FeatureDrift:
    s_missing, t_missing = np.isnan(served), np.isnan(truth)
    both = ~s_missing & ~t_missing
    equal = (s_missing & t_missing) | (both & (served == truth))
    diff = np.abs(served[both] - truth[both])
    return FeatureDrift(
        feature=name,
        rows=len(served),
        equal=int(equal.sum()),
        online_missing=int(s_missing.sum()),
        offline_missing=int(t_missing.sum()),
        mean_online=_mean(served),
        mean_offline=_mean(truth),
        max_abs_diff=float(diff.max()) if diff.size else None,
    )


def _mean(values: np.ndarray) -> float | None:
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else None


def as_json(d: FeatureDrift) -> dict[str, Any]:
    return asdict(d) | {"share_differing": d.share_differing}


def format_table(drift: list[FeatureDrift], rows: int) -> str:
    header = (
        "feature",
        "equal",
        "differ %",
        "online null",
        "offline null",
        "mean on/off",
        "max |d|",
    )
    lines = [
        (
            d.feature,
            f"{d.equal}/{d.rows}",
            f"{d.share_differing:.2%}",
            str(d.online_missing),
            str(d.offline_missing),
            f"{_fmt(d.mean_online)}/{_fmt(d.mean_offline)}",
            _fmt(d.max_abs_diff),
        )
        for d in drift
    ]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *lines]]
    body.insert(1, "  ".join("-" * w for w in widths))
    return f"skew over {rows} logged rows\n" + "\n".join(line.rstrip() for line in body)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
