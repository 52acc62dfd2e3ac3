"""The skew monitor's pure parts: per-feature drift and the logged field statuses."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
from feast.feature_logging import LOG_DATE_FIELD, LOG_TIMESTAMP_FIELD, REQUEST_ID_FIELD
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

from batch.skew import _drift
from core.settings import Settings
from serving.feature_log import _arrays
from serving.online import OnlineRead, RequestRow


def test_drift_counts_equal_missing_and_distance() -> None:
    served = np.array([1.0, 2.0, math.nan, 4.0, math.nan])
    truth = np.array([1.0, 2.5, math.nan, math.nan, 7.0])
    d = _drift("f", served, truth)
    assert (d.rows, d.equal, d.online_missing, d.offline_missing) == (5, 2, 2, 2)
    assert d.max_abs_diff == 0.5 and d.share_differing == 0.6
    assert d.mean_online == 7 / 3 and d.mean_offline == 3.5


def test_logged_status_says_why_a_value_is_missing() -> None:
    columns = [("v__a", "a", "v"), ("v__b", "b", "v"), ("v__c", "c", "v"), ("odfv__d", "d", None)]
    fields = [pa.field("user_id", pa.int64())]
    for prefix, _, _ in columns:
        fields += [
            pa.field(prefix, pa.float64()),
            pa.field(f"{prefix}__timestamp", pa.timestamp("s", tz="UTC")),
            pa.field(f"{prefix}__status", pa.int32()),
        ]
    fields += [
        pa.field(LOG_TIMESTAMP_FIELD, pa.timestamp("us", tz="UTC")),
        pa.field(LOG_DATE_FIELD, pa.date32()),
        pa.field(REQUEST_ID_FIELD, pa.string()),
    ]
    read = OnlineRead(
        columns={"a": [1.0, None], "b": [None, None], "c": [None, 3], "d": [0.5, 0.5]},
        timestamps={"v": [100.0, None]},
        stale=[{"b"}, set()],
    )
    at = datetime(2026, 1, 2, tzinfo=timezone.utc)
    one = OnlineRead({"a": [2.0], "b": [2.0], "c": [2.0], "d": [0.5]}, {"v": [100.0]}, [set()])
    pending: list[tuple[list[RequestRow], OnlineRead, float]] = [
        ([{"user_id": 7}, {"user_id": 8}], read, at.timestamp() + 0.25),
        ([{"user_id": 9, "transaction_id": "t9"}], one, at.timestamp()),
    ]
    got = _arrays(pa.schema(fields), ["user_id"], columns, pending)
    present, stale = FieldStatus.PRESENT, FieldStatus.OUTSIDE_MAX_AGE
    assert got["v__a__status"].to_pylist() == [present, FieldStatus.NOT_FOUND, present]
    assert got["v__b__status"].to_pylist() == [stale, FieldStatus.NOT_FOUND, present]
    assert got["v__c__status"].to_pylist() == [FieldStatus.NULL_VALUE, present, present]
    # Request-time features carry the request's time; Feast's schema keeps whole seconds.
    assert got["odfv__d__timestamp"].to_pylist() == [at, at, at]
    assert got[LOG_TIMESTAMP_FIELD].to_pylist()[0] == at + timedelta(seconds=0.25)
    assert got[LOG_DATE_FIELD].to_pylist() == [at.date()] * 3
    assert got["user_id"].to_pylist() == [7, 8, 9]
    assert got[REQUEST_ID_FIELD].to_pylist() == [None, None, "t9"]


def test_feature_logging_is_off_by_default() -> None:
    assert Settings.model_fields["feature_log_dir"].default is None
