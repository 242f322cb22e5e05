"""Realised volatility over the forecast horizon (the Kronos paper's volatility task): each
model's forecast of it from its sample paths, the random walk's forecast from the lookback, and
both scored against the realised one (`evaluate.py --volatility`, `volatility.json`).

Definitions, on close-to-close log returns, per bar (not annualised):

* **realised**: ``RV = sqrt(sum_{k=1..H} (ln c_k - ln c_{k-1})^2)`` over the `H = pred_len`
  actual closes ``c_1..c_H`` after the origin, ``c_0`` the origin's (last observed) close;
* **a model's forecast** from its `S` sample paths ``p_s``: ``sqrt(mean_s sum_k (ln p_{s,k} -
  ln p_{s,k-1})^2)`` with ``p_{s,0} = c_0``: the realised variance the model expects (variances
  average over paths, volatilities do not), then its root. One path would be one draw of the
  realised volatility, not a forecast of it, so `evaluate.py` asks for ``--sample_count >= 2``
  for a sampled model;
* **historical** (the volatility forecast of the naive and drift baselines, whose paths are
  deterministic lines): ``sqrt(H * mean_j (ln c_j - ln c_{j-1})^2)`` over the lookback's
  closes: the lookback's realised variance per bar scaled to `H` bars, the random walk's
  forecast.

A log return needs positive closes: an origin where any close used (actual, path or lookback)
is not positive and finite has no value and is left out of every forecaster's scores, counted
in `excluded`. Scores over all (symbol, origin) pairs left: ``MAE = mean |f - RV|`` and
``R^2 = 1 - SSE / SST``, ``SST = sum (RV - mean RV)^2``: the R^2 of the forecast as it is (not
of a regression on it), so it is negative for a forecast worse than the mean realised value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from kronos_engine.evaluation.scoring import MetricAccumulator

HISTORICAL = "historical"
VOLATILITY_FILE = "volatility.json"
DEFINITION = {
    "realised": "sqrt(sum over the pred_len bars of the squared close-to-close log return, "
    "from the origin's close)",
    "forecast": "sqrt(mean over the sample paths of the same sum on each path)",
    HISTORICAL: "sqrt(pred_len * mean squared close-to-close log return of the lookback): the "
    "naive and drift baselines' (random walk) forecast",
    "r2": "1 - SSE / SST over all (symbol, origin) pairs, SST around the mean realised value",
}


def _log_returns(first: np.ndarray, closes: np.ndarray) -> np.ndarray:
    """Log returns of ``closes`` (``(..., H)``) from ``first`` (``(...)``), NaN where a close
    is not positive and finite."""
    both = np.concatenate([np.asarray(first, np.float64)[..., None], closes], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(np.where(np.isfinite(both) & (both > 0), both, np.nan))
    return np.diff(logs, axis=-1)


def realised_vol(close_origin: np.ndarray, closes: np.ndarray) -> np.ndarray:
    """``(B,)`` realised volatility of each origin's ``closes`` ``(B, H)`` from its close."""
    r = _log_returns(close_origin, np.asarray(closes, np.float64))
    return np.sqrt(np.sum(r**2, axis=-1))


def path_vol(close_origin: np.ndarray, paths: np.ndarray) -> np.ndarray:
    """``(B,)`` volatility forecast from sample paths of the close ``(B, S, H)``: the root of
    the mean realised variance over the `S` paths."""
    paths = np.asarray(paths, np.float64)
    origin = np.broadcast_to(np.asarray(close_origin, np.float64)[:, None], paths.shape[:2])
    r = _log_returns(origin, paths)
    return np.sqrt(np.mean(np.sum(r**2, axis=-1), axis=-1))


def historical_vol(lookback_close: np.ndarray, horizon: int) -> np.ndarray:
    """``(B,)`` random-walk volatility forecast of `horizon` bars from the lookback closes
    ``(B, L)``, ``L >= 2``: ``sqrt(horizon * mean squared one-bar log return)``."""
    close = np.asarray(lookback_close, np.float64)
    if close.shape[-1] < 2:
        raise ValueError("historical volatility needs a lookback of at least 2 closes")
    r = _log_returns(close[..., 0], close[..., 1:])
    return np.sqrt(int(horizon) * np.mean(r**2, axis=-1))


def vol_scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """MAE and R^2 (``1 - SSE / SST``, NaN when the realised values do not vary) of a
    volatility forecast, with the pair count."""
    p, t = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if p.shape != t.shape:
        raise ValueError(f"volatility inputs differ in shape: {p.shape} vs {t.shape}")
    nan = float("nan")
    if not p.size:
        return {"mae": nan, "r2": nan, "mean_forecast": nan, "pairs": 0}
    sst = float(np.sum((t - t.mean()) ** 2))
    sse = float(np.sum((p - t) ** 2))
    return {
        "mae": float(np.mean(np.abs(p - t))),
        "r2": 1.0 - sse / sst if sst > 0 else nan,
        "mean_forecast": float(p.mean()),
        "pairs": int(p.size),
    }


def volatility_section(acc: MetricAccumulator, path_models: list[str]) -> dict[str, Any]:
    """`volatility.json`: the realised volatility against each of `path_models`' forecasts
    (from their sample paths) and the historical one, on the (symbol, origin) pairs where all
    are defined; overall and per symbol."""
    keys = ["symbol", "origin"]
    frames = {m: acc.volatility_table(m) for m in acc.models}
    base = next(iter(frames.values()))[[*keys, "vol_true", "vol_hist"]]
    table = base.rename(columns={"vol_hist": HISTORICAL})
    for model in path_models:
        pred = frames[model][[*keys, "vol_pred"]].rename(columns={"vol_pred": model})
        table = table.merge(pred, on=keys, how="left", validate="one_to_one")
    names = [*path_models, HISTORICAL]
    defined = np.isfinite(table[["vol_true", *names]].to_numpy(np.float64)).all(axis=1)
    kept = table[defined]
    realised = kept["vol_true"].to_numpy(np.float64)
    section: dict[str, Any] = {
        "definition": DEFINITION,
        "pairs": int(defined.sum()),
        "excluded": int((~defined).sum()),
        "mean_realised": float(realised.mean()) if realised.size else float("nan"),
        "forecasts": {n: vol_scores(kept[n].to_numpy(np.float64), realised) for n in names},
    }
    by_symbol: dict[str, dict[str, dict[str, float]]] = {}
    for symbol, part in kept.groupby("symbol", sort=True):
        t = part["vol_true"].to_numpy(np.float64)
        by_symbol[str(symbol)] = {n: vol_scores(part[n].to_numpy(np.float64), t) for n in names}
    section["by_symbol"] = by_symbol
    return section


def volatility_markdown(section: dict[str, Any]) -> list[str]:
    """The report's volatility part: one row per forecaster, the better MAE and R^2 in bold."""
    rows = section["forecasts"]
    mae = {n: r["mae"] for n, r in rows.items() if np.isfinite(r["mae"])}
    r2 = {n: r["r2"] for n, r in rows.items() if np.isfinite(r["r2"])}
    lines = [
        "## Realised volatility over the horizon",
        "",
        "Realised: sqrt of the sum of squared close-to-close log returns over the horizon, "
        "from the origin's close. A model's forecast: the same over each sample path, the "
        "squares averaged over the paths, then the root. `historical` (the naive and drift "
        "baselines'): the lookback's mean squared log return times the horizon, rooted. "
        f"{section['pairs']} (symbol, origin) pairs, mean realised volatility "
        f"{section['mean_realised']:.4g}"
        + (
            f"; {section['excluded']} left out (a close not positive)"
            if section["excluded"]
            else ""
        )
        + ". Per symbol: `volatility.json`.",
        "",
        "| forecaster | mean forecast | MAE | R² |",
        "|---|---:|---:|---:|",
    ]
    for name, r in rows.items():
        cells = [
            _cell(r["mean_forecast"], False),
            _cell(r["mae"], bool(mae) and r["mae"] == min(mae.values())),
            _cell(r["r2"], bool(r2) and r["r2"] == max(r2.values())),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def _cell(value: float, bold: bool) -> str:
    text = f"{value:.4g}" if np.isfinite(value) else "-"
    return f"**{text}**" if bold else text


def origin_volatility(
    symbols: list[str],
    origin_ns: np.ndarray,
    vol_pred: np.ndarray,
    vol_true: np.ndarray,
    vol_hist: np.ndarray,
) -> pd.DataFrame:
    """One row per origin of a batch: what `MetricAccumulator.volatility_table` keeps."""
    return pd.DataFrame(
        {
            "symbol": symbols,
            "origin": np.asarray(origin_ns).astype("datetime64[ns]"),
            "vol_pred": vol_pred,
            "vol_true": vol_true,
            "vol_hist": vol_hist,
        }
    )
