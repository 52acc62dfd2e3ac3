"""The users and merchants behind the synthetic transactions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

COUNTRIES = np.array(["US", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "IN", "NG"])
HOME_WEIGHTS = np.array([0.55, 0.1, 0.08, 0.07, 0.05, 0.05, 0.04, 0.03, 0.02, 0.01])


@dataclass(frozen=True)
class Population:
    users: pd.DataFrame  # user_id, signup_us, home_country, typical_amount, activity
    merchants: pd.DataFrame  # merchant_id, risk_score, is_high_risk_mcc


def make_population(
    rng: np.random.Generator, n_users: int, n_merchants: int, start: datetime, days: int
) -> Population:
    """Users sign up over three years, some during the generated period (new accounts)."""
    start_us = int(start.timestamp() * 1_000_000)
    day_us = 86_400 * 1_000_000
    old = rng.random(n_users) < 0.9
    signup_us = np.where(
        old,
        start_us - rng.integers(30 * day_us, 3 * 365 * day_us, n_users),
        start_us + rng.integers(-30 * day_us, max(days, 1) * day_us, n_users),
    )
    users = pd.DataFrame(
        {
            "user_id": np.arange(1, n_users + 1, dtype=np.int64),
            "signup_us": signup_us.astype(np.int64),
            "home_country": rng.choice(COUNTRIES, n_users, p=HOME_WEIGHTS),
            "typical_amount": np.exp(rng.normal(3.5, 0.6, n_users)),
            "activity": rng.gamma(2.0, 1.0, n_users),
        }
    )
    risky = rng.random(n_merchants) < 0.06
    merchants = pd.DataFrame(
        {
            "merchant_id": np.arange(1, n_merchants + 1, dtype=np.int64),
            "risk_score": np.where(
                risky, rng.beta(6, 4, n_merchants), rng.beta(1, 14, n_merchants)
            ),
            "is_high_risk_mcc": (risky & (rng.random(n_merchants) < 0.7)).astype(np.int64),
        }
    )
    return Population(users=users, merchants=merchants)
