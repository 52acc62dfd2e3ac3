"""The parity proof's pure parts: its reference, its comparison and its rounds."""

from __future__ import annotations

import math
import random
from typing import Any

import pandas as pd

from core.aggregations import UserWindowState
from core.request_features import compute
from harness.reference import request_features, windows_at
from verify.parity_compare import UNEXPLAINED, Verdict, compare, same
from verify.parity_online import rounds_of

_US = 1_000_000


def test_brute_force_windows_equal_the_incremental_state() -> None:
    rng = random.Random(3)
    ts, history = 0, []
    for _ in range(400):
        ts += rng.choice([1, 30, 600, 3_599, 3_600, 7_200, 86_400]) * _US + rng.randrange(2)
        history.append((ts, round(rng.uniform(0.01, 900), 2), rng.randrange(6)))
    state = UserWindowState()
    for t, amount, merchant in history:
        assert windows_at(history, t) == state.apply(t, amount, merchant)


def test_request_features_match_the_on_demand_transform() -> None:
    rows: list[dict[str, Any]] = [
        {"amount": 12.5, "avg_amount_30d": 25.0, "home_country": "GB", "country": "GB"},
        {"amount": 3.0, "avg_amount_30d": None, "home_country": None, "country": "FR"},
        {"amount": 7.0, "avg_amount_30d": 0.0, "home_country": "US", "country": "FR"},
    ]
    for row, channel in zip(rows, ["online", "pos", "atm"], strict=True):
        row["channel"] = channel
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    want = compute(columns)
    for i, row in enumerate(rows):
        assert request_features(row) == {k: v[i] for k, v in want.items()}


def test_missing_equals_missing_and_nothing_else() -> None:
    assert same(None, math.nan) and same(3, 3.0)
    assert not same(None, 0.0) and not same(1.0, 1.0 + 1e-12)


def test_mismatches_are_explained_or_reported() -> None:
    ref = pd.DataFrame({"a": [1.0, 2.0, None], "b": [1, 1, 1]}, index=["t1", "t2", "t3"])
    ref_scores = {"t1": 0.5, "t2": 0.25, "t3": 0.125}
    got: dict[str, dict[str, Any]] = {
        "t1": {"a": 1.0, "b": 1},
        "t2": {"a": 9.0, "b": 1},
        "t3": {"a": None, "b": 2},
    }
    scores = {"t1": 0.5, "t2": 0.75, "t3": 0.125}
    verdict = Verdict.of("review", [{"feature": "a", "contribution": 0.5}])
    verdicts = dict.fromkeys(ref_scores, verdict)
    report = compare(
        "m",
        got,
        scores,
        ref,
        ref_scores,
        lambda tx, f: "known" if f == "a" else None,
        verdicts,
        verdicts,
    )
    assert (report.total, report.matched, report.unexplained) == (3, 1, 1)
    assert report.causes == {"known": 1, UNEXPLAINED: 1}
    assert report.max_diff == 0.5 and report.max_diff_matched == 0.0
    assert (report.verdicts_checked, report.verdict_mismatches) == (1, [])
    assert not all(c.ok for c in report.checks())


def test_a_decision_or_reason_unlike_the_references_fails_where_vectors_equal() -> None:
    values = {"t1": 1.0, "t2": 2.0, "t3": 3.0, "t4": 4.0}
    ids = list(values)
    ref = pd.DataFrame({"a": list(values.values())}, index=ids)
    scores = dict.fromkeys(ids, 0.5)
    rows = {tx: {"a": v} for tx, v in values.items()}
    want = Verdict.of("review", [{"feature": "a", "contribution": 0.5}])
    got = {
        "t1": want,
        "t2": Verdict.of("review", [{"feature": "a", "contribution": 0.5 + 1e-12}]),  # in tolerance
        "t3": Verdict("decline", want.reasons),
        "t4": Verdict.of("review", [{"feature": "b", "contribution": 0.5}]),
    }
    report = compare(
        "m", rows, scores, ref, scores, lambda tx, f: None, got, dict.fromkeys(ids, want)
    )
    assert report.matched == report.verdicts_checked == 4
    assert [m["transaction_id"] for m in report.verdict_mismatches] == ["t3", "t4"]
    assert report.decisions == {"review": 3, "decline": 1}
    verdict_check = [c for c in report.checks() if "decision" in c.measure]
    assert len(verdict_check) == 1 and not verdict_check[0].ok


def test_rounds_hold_one_event_per_user_in_order() -> None:
    sample = pd.DataFrame({"user_id": [1, 2, 1, 1, 3, 2], "transaction_id": list("abcdef")})
    rounds = rounds_of(sample)
    assert [list(r.transaction_id) for r in rounds] == [["a", "b", "e"], ["c", "f"], ["d"]]
