"""Holdout metrics and the PNG report: discrimination and calibration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from core.cli import UserError


def metrics(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """ROC AUC, PR AUC, and a calibration check (Brier, ECE, reliability bins)."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    reliability = []
    ece = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            mean_p, rate = float(p[mask].mean()), float(y[mask].mean())
            ece += mask.mean() * abs(mean_p - rate)
            reliability.append(
                {"bin": b, "n": int(mask.sum()), "mean_score": mean_p, "fraud_rate": rate}
            )
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "expected_calibration_error": float(ece),
        "base_rate": float(y.mean()),
        "reliability": reliability,
    }


def threshold_at_fpr(negatives: np.ndarray, fpr: float) -> float:
    """The lowest threshold that flags at most ``fpr`` of the negatives (score >= threshold)."""
    ranked = np.sort(negatives)[::-1]
    allowed = int(np.floor(fpr * len(ranked)))
    if allowed >= len(ranked):
        return 0.0
    # Just above the first negative that may not be flagged, so ties never push past the rate.
    return float(np.nextafter(ranked[allowed], np.inf))


def pick_bands(
    y: np.ndarray, p: np.ndarray, review_fpr: float, decline_fpr: float
) -> dict[str, Any]:
    """Review and decline thresholds at target false-positive rates on the holdout.

    Returns the manifest's ``decision`` block: the rule, the thresholds and what they give on
    the holdout (the share of legitimate rows flagged and of fraud caught at each).
    """
    if not 0.0 < decline_fpr <= review_fpr < 1.0:
        raise UserError(f"need 0 < decline FPR ({decline_fpr}) <= review FPR ({review_fpr}) < 1")
    negatives, positives = p[y == 0], p[y == 1]
    if len(negatives) == 0:
        raise UserError("the holdout has no legitimate rows to set a false-positive rate on")
    review_at = threshold_at_fpr(negatives, review_fpr)
    decline_at = max(review_at, threshold_at_fpr(negatives, decline_fpr))

    def achieved(threshold: float) -> dict[str, float]:
        recall = float((positives >= threshold).mean()) if len(positives) else 0.0
        return {"fpr": float((negatives >= threshold).mean()), "recall": recall}

    return {
        "rule": {
            "kind": "holdout_false_positive_rate",
            "review_fpr": review_fpr,
            "decline_fpr": decline_fpr,
            "holdout_rows": len(p),
        },
        "review_at": review_at,
        "decline_at": decline_at,
        "holdout": {"review": achieved(review_at), "decline": achieved(decline_at)},
    }


def describe_bands(block: dict[str, Any]) -> str:
    """The manifest's decision block in one line: thresholds, the rule, what they catch."""
    rule, review, decline = block["rule"], block["holdout"]["review"], block["holdout"]["decline"]
    return (
        f"review at score >= {block['review_at']:.4f}, decline at >= {block['decline_at']:.4f} "
        f"(flagging {rule['review_fpr']:.1%} / {rule['decline_fpr']:.1%} of legitimate holdout "
        f"rows; fraud caught {review['recall']:.0%} / {decline['recall']:.0%})"
    )


def write_report(y: np.ndarray, p: np.ndarray, summary: dict[str, Any], out: Path) -> None:
    """ROC, precision-recall and reliability curves in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    fpr, tpr, _ = roc_curve(y, p)
    axes[0].plot(fpr, tpr, label=f"AUC {summary['roc_auc']:.3f}")
    axes[0].plot([0, 1], [0, 1], "--", color="grey")
    axes[0].set(title="ROC (holdout)", xlabel="false positive rate", ylabel="true positive rate")
    prec, rec, _ = precision_recall_curve(y, p)
    axes[1].plot(rec, prec, label=f"AP {summary['pr_auc']:.3f}")
    axes[1].axhline(summary["base_rate"], ls="--", color="grey")
    axes[1].set(title="Precision-recall (holdout)", xlabel="recall", ylabel="precision")
    rel = summary["reliability"]
    axes[2].plot([r["mean_score"] for r in rel], [r["fraud_rate"] for r in rel], "o-")
    axes[2].plot([0, 1], [0, 1], "--", color="grey")
    axes[2].set(
        title=f"Calibration (ECE {summary['expected_calibration_error']:.3f})",
        xlabel="mean score",
        ylabel="observed fraud rate",
    )
    for ax in axes:
        ax.legend(loc="lower right") if ax.get_legend_handles_labels()[0] else None
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
