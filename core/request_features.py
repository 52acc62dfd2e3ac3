"""Request-time features, computed from the transaction and the user's profile.

The Feast on-demand feature view ``transaction_request`` calls ``compute``; any
path that needs the same values outside Feast calls it too. Inputs and outputs
are Feast's python-mode shape: a dict of equal-length lists.
"""

from __future__ import annotations

import math
from typing import Any

OUTPUTS: tuple[str, ...] = ("amount_log", "amount_to_avg_30d", "is_foreign", "is_online")


def compute(inputs: dict[str, list[Any]]) -> dict[str, list[Any]]:
    amount = inputs["amount"]
    avg = inputs["avg_amount_30d"]
    home = inputs["home_country"]
    return {
        "amount_log": [math.log1p(a) for a in amount],
        "amount_to_avg_30d": [a / v if v else None for a, v in zip(amount, avg, strict=True)],
        "is_foreign": [
            None if h is None else int(c != h) for c, h in zip(inputs["country"], home, strict=True)
        ],
        "is_online": [int(ch == "online") for ch in inputs["channel"]],
    }
