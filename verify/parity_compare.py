"""Comparing one mode's vectors and scores with the reference, and saying why they differ.

A vector matches when every feature is equal (missing equals missing). A mismatch is
explained only by a known, checkable cause; anything else is reported as unexplained.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.predictor import Scored
from harness.report import Check

TOLERANCE = 1e-9
UNEXPLAINED = "unexplained"

# Given a mode's transaction id and one differing feature: the cause, or None.
Explain = Callable[[str, str], str | None]


@dataclass(frozen=True)
class Verdict:
    """A mode's decision and reasons (feature, contribution) for one transaction."""

    decision: str
    reasons: tuple[tuple[str, float], ...]

    @classmethod
    def of(cls, decision: str, reasons: Iterable[Mapping[str, Any]]) -> Verdict:
        """From the reasons as every mode writes them: ``{"feature", "contribution"}``."""
        return cls(decision, tuple((r["feature"], float(r["contribution"])) for r in reasons))

    def agrees(self, other: Verdict) -> bool:
        """Same decision, same features in the same order, contributions within TOLERANCE."""
        return (
            self.decision == other.decision
            and [f for f, _ in self.reasons] == [f for f, _ in other.reasons]
            and all(
                abs(a - b) <= TOLERANCE
                for (_, a), (_, b) in zip(self.reasons, other.reasons, strict=True)
            )
        )

    def to_json(self) -> dict[str, Any]:
        return {"decision": self.decision, "reasons": [list(r) for r in self.reasons]}


@dataclass
class ModeReport:
    mode: str
    total: int
    matched: int = 0
    max_diff: float = 0.0  # every scored transaction
    max_diff_matched: float = 0.0  # transactions whose vectors equal the reference
    missing: list[str] = field(default_factory=list)  # no score from this mode
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    causes: Counter[str] = field(default_factory=Counter)
    verdicts_checked: int = 0  # transactions with equal vectors: their verdicts are compared
    verdict_mismatches: list[dict[str, Any]] = field(default_factory=list)
    decisions: Counter[str] = field(default_factory=Counter)

    @property
    def unexplained(self) -> int:
        return sum(1 for m in self.mismatches if UNEXPLAINED in m["causes"])

    def checks(self) -> list[Check]:
        share = self.matched / self.total if self.total else 0.0
        out = [
            Check(
                self.mode,
                "vectors equal to the reference",
                f"{self.matched}/{self.total} ({share:.2%})",
                True,
            ),
            Check(
                self.mode,
                f"max |score - ref| where vectors equal (<= {TOLERANCE:g})",
                f"{self.max_diff_matched:.3g}",
                self.max_diff_matched <= TOLERANCE,
            ),
            Check(self.mode, "max |score - ref| overall", f"{self.max_diff:.3g}", True),
            Check(
                self.mode,
                "decision and reasons equal to the reference where vectors equal",
                f"{self.verdicts_checked - len(self.verdict_mismatches)}/{self.verdicts_checked}",
                not self.verdict_mismatches,
            ),
            Check(self.mode, "without a score", str(len(self.missing)), not self.missing),
        ]
        out += [
            Check(self.mode, f"mismatch: {cause}", str(n), cause != UNEXPLAINED)
            for cause, n in sorted(self.causes.items())
        ]
        if not self.causes:
            out.append(Check(self.mode, "mismatches (explained or not)", "0", True))
        return out

    def to_json(self, limit: int = 50) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "transactions": self.total,
            "vectors_equal": self.matched,
            "share_equal": self.matched / self.total if self.total else None,
            "max_abs_score_diff": self.max_diff,
            "max_abs_score_diff_where_equal": self.max_diff_matched,
            "without_score": self.missing[:limit],
            "mismatch_causes": dict(self.causes),
            "features_differing": dict(Counter(f for m in self.mismatches for f in m["features"])),
            "mismatches": self.mismatches[:limit],
            "mismatches_listed": min(limit, len(self.mismatches)),
            "decisions": dict(self.decisions),
            "verdicts_equal": self.verdicts_checked - len(self.verdict_mismatches),
            "verdict_mismatches": self.verdict_mismatches[:limit],
        }


def same(a: Any, b: Any) -> bool:
    """Equal feature values, with None and NaN both meaning missing."""
    a_missing = a is None or (isinstance(a, float) and math.isnan(a))
    b_missing = b is None or (isinstance(b, float) and math.isnan(b))
    if a_missing or b_missing:
        return a_missing and b_missing
    return bool(float(a) == float(b))


def compare(
    mode: str,
    vectors: Mapping[str, Mapping[str, Any]],
    scores: Mapping[str, float],
    reference: pd.DataFrame,
    reference_scores: Mapping[str, float],
    explain: Explain,
    verdicts: Mapping[str, Verdict],
    reference_verdicts: Mapping[str, Verdict],
) -> ModeReport:
    """One mode against the reference, over every transaction of the reference.

    Where the vectors are equal, the decision and reasons must be the reference's too."""
    report = ModeReport(mode, len(reference))
    features = list(reference.columns)
    for tx_id, want in reference.iterrows():
        tx = str(tx_id)
        if tx not in scores or tx not in vectors:
            report.missing.append(tx)
            continue
        got = vectors[tx]
        diff = abs(float(scores[tx]) - float(reference_scores[tx]))
        report.max_diff = max(report.max_diff, diff)
        differing = [f for f in features if not same(got.get(f), _plain(want[f]))]
        if not differing:
            report.matched += 1
            report.max_diff_matched = max(report.max_diff_matched, diff)
            _check_verdict(report, tx, verdicts.get(tx), reference_verdicts[tx])
            continue
        causes = sorted({explain(tx, f) or UNEXPLAINED for f in differing})
        report.causes.update(causes)
        report.mismatches.append(
            {
                "transaction_id": tx,
                "score_diff": diff,
                "features": {f: [_plain(got.get(f)), _plain(want[f])] for f in differing},
                "causes": causes,
            }
        )
    return report


def scored_verdicts(ids: Iterable[Any], scored: Scored) -> dict[str, Verdict]:
    """The predictor's verdicts for rows it scored, by transaction id."""
    reasons = scored.all_reasons()
    return {
        str(tx): Verdict.of(d, reasons[i])
        for i, (tx, d) in enumerate(zip(ids, scored.decisions, strict=True))
    }


def _check_verdict(report: ModeReport, tx: str, got: Verdict | None, want: Verdict) -> None:
    report.verdicts_checked += 1
    if got is None:
        report.verdict_mismatches.append({"transaction_id": tx, "got": None})
        return
    report.decisions[got.decision] += 1
    if not got.agrees(want):
        report.verdict_mismatches.append(
            {"transaction_id": tx, "got": got.to_json(), "want": want.to_json()}
        )


def frame_rows(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """A frame indexed by transaction_id as {id: {feature: value}}, missing as None."""
    return {
        str(i): {str(k): _plain(v) for k, v in row.items()}
        for i, row in frame.to_dict("index").items()
    }


def _plain(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value
