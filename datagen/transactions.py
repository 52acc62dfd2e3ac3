"""One time slice of synthetic transactions, with fraud bursts injected.

The label depends only on what the system serves: fraud comes in velocity bursts,
at unusually high amounts for the user, at risky merchants, abroad, online, and
more often on new accounts. A little label noise keeps the task honest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.events import CHANNELS, LABEL
from datagen.population import COUNTRIES, Population

_S = 1_000_000  # microseconds per second
_DAY = 86_400 * _S


def _pick(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    return rng.choice(len(weights), n, p=weights / weights.sum())


def time_slice(
    rng: np.random.Generator,
    pop: Population,
    start_us: int,
    end_us: int,
    n_txn: int,
    fraud_share: float,
) -> pd.DataFrame:
    """Transactions with timestamps in [start_us, end_us), sorted by time, labelled."""
    users = pop.users[pop.users["signup_us"] < end_us].reset_index(drop=True)
    merchants = pop.merchants
    if users.empty or n_txn == 0:
        return _frame([], [], [], [], [], [], [])

    normal = _normal(rng, users, merchants, start_us, end_us, int(n_txn * (1 - fraud_share)))
    fraud = _fraud(rng, users, merchants, start_us, end_us, max(int(n_txn * fraud_share / 4), 0))
    u, m, amount, channel, country, ts, label = (
        np.concatenate([a, b]) for a, b in zip(normal, fraud, strict=True)
    )
    keep = ts >= users["signup_us"].to_numpy()[u]
    return _frame(
        users["user_id"].to_numpy()[u][keep],
        merchants["merchant_id"].to_numpy()[m][keep],
        np.maximum(np.round(amount, 2), 1.0)[keep],
        np.asarray(CHANNELS)[channel][keep],
        country[keep],
        ts[keep],
        label[keep],
    )


# user index, merchant index, amount, channel index, country, timestamp (us), label
_Draws = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _normal(
    rng: np.random.Generator,
    users: pd.DataFrame,
    merchants: pd.DataFrame,
    start_us: int,
    end_us: int,
    n_normal: int,
) -> _Draws:
    """Normal spending, plus benign follow-ups so velocity alone is not the label."""
    u = _pick(rng, users["activity"].to_numpy(), n_normal)
    ts = rng.integers(start_us, end_us, n_normal)
    follow = rng.random(n_normal) < 0.04
    u = np.concatenate([u, u[follow]])
    ts = np.concatenate([ts, ts[follow] + rng.exponential(150 * _S, follow.sum()).astype(np.int64)])
    n = len(u)
    safe = (1 - merchants["risk_score"].to_numpy()) ** 4
    m = _pick(rng, safe, n)
    amount = users["typical_amount"].to_numpy()[u] * np.exp(rng.normal(0, 0.45, n))
    channel = rng.choice(len(CHANNELS), n, p=[0.6, 0.34, 0.06])
    home = users["home_country"].to_numpy()[u]
    country = np.where(rng.random(n) < 0.96, home, rng.choice(COUNTRIES, n))
    label = (rng.random(n) < 0.002).astype(np.int8)
    return u, m, amount, channel, country, ts, label


def _fraud(
    rng: np.random.Generator,
    users: pd.DataFrame,
    merchants: pd.DataFrame,
    start_us: int,
    end_us: int,
    n_attacks: int,
) -> _Draws:
    """Fraud: short bursts on compromised cards, new accounts hit harder."""
    age_days = (start_us - users["signup_us"].to_numpy()) / _DAY
    a_users = _pick(
        rng, users["activity"].to_numpy() * np.where(age_days < 30, 4.0, 1.0), n_attacks
    )
    burst = 1 + rng.poisson(3, n_attacks)
    fu = np.repeat(a_users, burst)
    gaps = rng.exponential(90 * _S, burst.sum()).astype(np.int64)
    starts = np.repeat(rng.integers(start_us, end_us, n_attacks), burst)
    # Offsets within each burst: cumulative gaps, restarted at every burst.
    cum = np.cumsum(gaps)
    offsets = cum - np.repeat(cum[np.cumsum(burst) - burst], burst) if n_attacks else gaps
    fts = starts + offsets
    nf = len(fu)
    risky = merchants["risk_score"].to_numpy() ** 2
    fm = np.where(rng.random(nf) < 0.7, _pick(rng, risky, nf), rng.integers(0, len(merchants), nf))
    famount = users["typical_amount"].to_numpy()[fu] * np.exp(rng.normal(1.1, 0.7, nf))
    fchannel = rng.choice(len(CHANNELS), nf, p=[0.15, 0.75, 0.10])
    fhome = users["home_country"].to_numpy()[fu]
    fcountry = np.where(rng.random(nf) < 0.6, rng.choice(COUNTRIES, nf), fhome)
    return fu, fm, famount, fchannel, fcountry, fts, np.ones(nf, dtype=np.int8)


def _frame(
    user_id: object,
    merchant_id: object,
    amount: object,
    channel: object,
    country: object,
    ts_us: object,
    label: object,
) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "user_id": np.asarray(user_id, dtype=np.int64),
            "merchant_id": np.asarray(merchant_id, dtype=np.int64),
            "amount": np.asarray(amount, dtype=np.float64),
            "channel": np.asarray(channel, dtype=object),
            "country": np.asarray(country, dtype=object),
            "ts_us": np.asarray(ts_us, dtype=np.int64),
            LABEL: np.asarray(label, dtype=np.int8),
        }
    )
    # One user never has two events at the same microsecond: window ties stay unambiguous.
    df = df.sort_values(["user_id", "ts_us"], kind="stable")
    df["ts_us"] += df.groupby(["user_id", "ts_us"]).cumcount().to_numpy()
    return df.sort_values("ts_us", kind="stable").reset_index(drop=True)
