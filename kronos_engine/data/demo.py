"""Deterministic synthetic K-lines so that every command works with no data at all.

Each symbol is a GARCH(1,1) log-return process with Student-t shocks (volatility clusters,
fat tails) and mild mean reversion of the log price (no drift to zero over long histories).
Volume follows volatility, and for intraday bars a U-shaped time-of-day profile (busy open
and close, quiet lunch). Bars are valid by construction: high >= max(open, close) >=
min(open, close) >= low > 0, volume > 0, and amount = vwap * volume with vwap in [low, high].
Symbol ``k`` depends only on ``(seed, k, freq, length)``, not on how many symbols are asked for.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from kronos_engine.data.features import FEATURES
from kronos_engine.data.schema import TIMESTAMP, Freq, parse_freq
from kronos_engine.errors import DataError

DEMO_VERSION = 1  # bump when the generator's output changes (part of the cache key)
_SESSIONS = (("09:30", "11:30"), ("13:00", "15:00"))  # A-share style sessions (qlib 'cn')


def _bar_times(freq: Freq) -> list[pd.Timedelta]:
    """Offsets from midnight of the bars of one trading day."""
    step = pd.Timedelta(minutes=freq.minutes or 0)
    times = []
    for start, end in _SESSIONS:
        t, stop = pd.Timedelta(start + ":00"), pd.Timedelta(end + ":00")
        while t < stop:
            times.append(t)
            t += step
    return times


def demo_timestamps(
    length: int, freq: str | Freq = "day", start: str = "2018-01-02"
) -> pd.DatetimeIndex:
    """Business days, or intraday bars within trading sessions of business days."""
    qfreq = parse_freq(freq) if isinstance(freq, str) else freq
    if not qfreq.intraday:
        return pd.bdate_range(start, periods=length)
    offsets = _bar_times(qfreq)
    days = pd.bdate_range(start, periods=math.ceil(length / len(offsets)))
    stamps = (days.values[:, None] + np.array(offsets, dtype="timedelta64[ns]")[None, :]).ravel()
    return pd.DatetimeIndex(stamps[:length])


def _u_shape(stamps: pd.DatetimeIndex, freq: Freq) -> np.ndarray:
    if not freq.intraday:
        return np.ones(len(stamps))
    offsets = _bar_times(freq)
    position = np.arange(len(stamps)) % len(offsets)
    u = position / max(len(offsets) - 1, 1)
    return 0.55 + 1.8 * (2.0 * u - 1.0) ** 2


def _one_symbol(
    rng: np.random.Generator, n: int, freq: Freq, stamps: pd.DatetimeIndex
) -> np.ndarray:
    bars_per_day = len(_bar_times(freq)) if freq.intraday else 1
    annual_vol = rng.uniform(0.15, 0.55)
    target_var = (annual_vol / math.sqrt(252 * bars_per_day)) ** 2
    alpha = rng.uniform(0.04, 0.12)
    beta = rng.uniform(0.80, 0.94 - alpha)
    omega = target_var * (1.0 - alpha - beta)
    dof = 5.0
    shocks = rng.standard_t(dof, size=n) / math.sqrt(dof / (dof - 2.0))
    log_p0 = math.log(rng.uniform(5.0, 200.0))
    kappa = 2e-3 / bars_per_day

    returns = np.empty(n)
    sigmas = np.empty(n)
    var, log_p, prev_r = target_var, log_p0, 0.0
    for t in range(n):  # the GARCH recursion is inherently sequential
        var = omega + alpha * prev_r * prev_r + beta * var
        sigma = math.sqrt(var)
        prev_r = sigma * shocks[t] - kappa * (log_p - log_p0)
        log_p += prev_r
        returns[t], sigmas[t] = prev_r, sigma

    close = np.exp(log_p0 + np.cumsum(returns))
    prev_close = np.concatenate([[math.exp(log_p0)], close[:-1]])
    open_ = prev_close * np.exp(rng.normal(0.0, 0.25, n) * sigmas)
    top, bottom = np.maximum(open_, close), np.minimum(open_, close)
    high = top * np.exp(np.abs(rng.normal(0.0, 0.6, n)) * sigmas)
    low = bottom * np.exp(-np.abs(rng.normal(0.0, 0.6, n)) * sigmas)

    base_volume = math.exp(rng.uniform(math.log(2e4), math.log(2e6))) / bars_per_day
    activity = 1.0 + 1.5 * np.abs(returns) / math.sqrt(target_var)
    noise = np.exp(rng.normal(0.0, 0.3, n))
    volume = np.maximum(1.0, np.round(base_volume * activity * _u_shape(stamps, freq) * noise))
    vwap = low + (high - low) * rng.uniform(0.3, 0.7, n)
    amount = vwap * volume
    return np.stack([open_, high, low, close, volume, amount], axis=1)


def generate_demo_frames(
    symbols: int = 4,
    length: int = 800,
    freq: str = "day",
    seed: int = 100,
    start: str = "2018-01-02",
) -> dict[str, pd.DataFrame]:
    """``symbols`` frames named ``DEMO000``.. with ``length`` bars each (timestamps + features)."""
    if symbols < 1 or length < 1:
        raise DataError(
            f"generate_demo_frames: symbols and length must be >= 1, got {symbols}, {length}"
        )
    qfreq = parse_freq(freq)
    stamps = demo_timestamps(length, qfreq, start)
    frames = {}
    for k in range(symbols):
        rng = np.random.default_rng([int(seed) % (2**63), k, DEMO_VERSION])
        values = _one_symbol(rng, length, qfreq, stamps)
        frame = pd.DataFrame(values, columns=list(FEATURES))
        frame.insert(0, TIMESTAMP, stamps)
        frames[f"DEMO{k:03d}"] = frame
    return frames
