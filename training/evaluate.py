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
