"""The model contract: which FeatureService the model consumes, and in what order.

The FeatureService itself is defined in ``feature_repo/`` and read back from the
Feast registry; everything here derives from it, so the order cannot drift.
"""

from __future__ import annotations

from feast import FeatureService

FEATURE_SERVICE_NAME = "fraud_model_v1"  # bump the suffix whenever the feature list changes

USER_PROFILE_VIEW = "user_profile"
MERCHANT_PROFILE_VIEW = "merchant_profile"
WINDOWS_VIEW = "user_txn_windows"
WINDOWS_PUSH_SOURCE = "user_txn_windows_push"
BATCH_SCORE_VIEW = "user_batch_score"

ENTITY_KEYS: tuple[str, ...] = ("user_id", "merchant_id")
REQUEST_FIELDS: tuple[str, ...] = ("amount", "channel", "country")


def feature_order(service: FeatureService) -> list[str]:
    """The model's input columns: the service's features in declaration order.

    The predictor checks an artifact against it with the service alone; everything that
    also needs the views reads it as ``core.plan.plan_service(...).order``.
    """
    return [f.name for p in service.feature_view_projections for f in p.features]
