"""Request-time features, as the on-demand feature view computes them."""

import math

from core.request_features import OUTPUTS, compute


def test_values_and_missing_profile() -> None:
    out = compute(
        {
            "amount": [100.0, 10.0],
            "channel": ["online", "pos"],
            "country": ["US", "GB"],
            "avg_amount_30d": [50.0, None],
            "home_country": ["US", None],
        }
    )
    assert tuple(out) == OUTPUTS
    assert out["amount_log"] == [math.log1p(100.0), math.log1p(10.0)]
    assert out["amount_to_avg_30d"] == [2.0, None]
    assert out["is_foreign"] == [0, None]
    assert out["is_online"] == [1, 0]
