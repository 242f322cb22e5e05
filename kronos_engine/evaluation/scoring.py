"""Scored forecasts and streaming metrics: one model's forecasts of a batch of origins as arrays
(`Batch`, also the rows of `forecasts.parquet`), and `MetricAccumulator`, which keeps only
per-symbol sums and one horizon return per origin (for IC and direction accuracy), so memory
stays bounded on long splits.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kronos_engine.evaluation import metrics as M
from kronos_engine.evaluation.volatility import origin_volatility, realised_vol
from kronos_engine.forecasting.forecast import quantile_column


@dataclass
class Batch:
    """One model's forecasts of one batch of origins, as arrays (B origins, H steps)."""

    model: str
    symbols: list[str]
    origin_ns: np.ndarray  # (B,) origin timestamps, int64 ns
    target_ns: np.ndarray  # (B, H)
    close_pred: np.ndarray  # (B, H)
    close_true: np.ndarray  # (B, H)
    close_origin: np.ndarray  # (B,)
    scale: np.ndarray  # (B,) MASE denominators
    quantiles: dict[float, np.ndarray] = field(default_factory=dict)  # q -> (B, H)
    crps: np.ndarray | None = None  # (B, H)
    vol_pred: np.ndarray | None = None  # (B,) volatility forecast from the sample paths
    vol_hist: np.ndarray | None = None  # (B,) the lookback's (`evaluation.volatility`)

    def table(self) -> pd.DataFrame:
        """One row per origin and horizon step (the `forecasts.parquet` layout)."""
        b, h = self.close_pred.shape
        table = {
            "model": np.full(b * h, self.model, dtype=object),
            "symbol": np.repeat(np.asarray(self.symbols, dtype=object), h),
            "origin": np.repeat(self.origin_ns, h).astype("datetime64[ns]"),
            "timestamp": self.target_ns.reshape(-1).astype("datetime64[ns]"),
            "horizon": np.tile(np.arange(1, h + 1, dtype=np.int32), b),
            "close_pred": self.close_pred.reshape(-1),
            "close_true": self.close_true.reshape(-1),
            "close_origin": np.repeat(self.close_origin, h),
            "mase_scale": np.repeat(self.scale, h),
        }
        for q, values in self.quantiles.items():
            table[quantile_column("close", q)] = values.reshape(-1)
        if self.crps is not None:
            table["crps"] = self.crps.reshape(-1)
        return pd.DataFrame(table)


class MetricAccumulator:
    """Running sums per (model, symbol) and per-origin horizon returns: enough for every
    metric, without keeping the forecasts."""

    SUMS = ("n", "abs", "sq", "ape", "ape_n", "scaled", "scaled_n", "crps", *M.INTERVALS)

    def __init__(self) -> None:
        self.sums: dict[tuple[str, str], dict[str, float]] = defaultdict(
            lambda: dict.fromkeys(self.SUMS, 0.0)
        )
        self.calibration: dict[str, dict[float, list[float]]] = defaultdict(dict)
        self.returns: dict[str, list[pd.DataFrame]] = defaultdict(list)
        self.losses: dict[str, list[pd.DataFrame]] = defaultdict(list)  # per-origin loss sums
        self.volatility: dict[str, list[pd.DataFrame]] = defaultdict(list)  # per origin
        self.sampled = False

    def add(self, batch: Batch) -> None:
        err = batch.close_pred - batch.close_true
        scale = np.broadcast_to(batch.scale[:, None], err.shape)
        true = batch.close_true
        for i, symbol in enumerate(batch.symbols):
            acc = self.sums[(batch.model, symbol)]
            e, t, s = err[i], true[i], scale[i]
            acc["n"] += e.size
            acc["abs"] += float(np.abs(e).sum())
            acc["sq"] += float((e**2).sum())
            nz = t != 0
            acc["ape"] += float((np.abs(e[nz]) / np.abs(t[nz])).sum())
            acc["ape_n"] += int(nz.sum())
            pos = s > 0
            acc["scaled"] += float((np.abs(e[pos]) / s[pos]).sum())
            acc["scaled_n"] += int(pos.sum())
            if batch.crps is not None:
                acc["crps"] += float(batch.crps[i].sum())
                for key, (lo, hi) in M.INTERVALS.items():
                    inside = (t >= batch.quantiles[lo][i]) & (t <= batch.quantiles[hi][i])
                    acc[key] += int(inside.sum())
        if batch.crps is not None:
            self.sampled = True
            for q, values in batch.quantiles.items():
                hits = self.calibration[batch.model].setdefault(q, [0.0, 0.0])
                hits[0] += float((true <= values).sum())
                hits[1] += true.size
        self.losses[batch.model].append(_origin_losses(batch, err, scale))
        if batch.vol_pred is not None and batch.vol_hist is not None:
            vol_true = realised_vol(batch.close_origin, true)
            self.volatility[batch.model].append(
                origin_volatility(
                    batch.symbols, batch.origin_ns, batch.vol_pred, vol_true, batch.vol_hist
                )
            )
        self.returns[batch.model].append(
            pd.DataFrame(
                {
                    "symbol": batch.symbols,
                    "origin": batch.origin_ns.astype("datetime64[ns]"),
                    "pred_return": M.horizon_return(batch.close_pred[:, -1], batch.close_origin),
                    "true_return": M.horizon_return(true[:, -1], batch.close_origin),
                }
            )
        )

    # ---- results ----
    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(model for model, _ in self.sums))

    def daily_losses(self, model: str) -> pd.DataFrame:
        """One row per origin date (index, sorted): `mae`, `mse`, `mase` and, when sampled,
        `crps`, each the mean over every (symbol, horizon step) cell of that date, so the
        significance tests (`evaluation.significance`) run over dates, not over the
        cross-sectionally dependent cells of one date."""
        sums = pd.concat(self.losses[model], ignore_index=True).groupby("origin").sum()
        n = sums["n"]
        out = pd.DataFrame(
            {
                "mae": sums["abs"] / n,
                "mse": sums["sq"] / n,
                "mase": sums["scaled"] / sums["scaled_n"].where(sums["scaled_n"] > 0),
            }
        )
        if self.sampled:
            out["crps"] = sums["crps"] / n
        return out.sort_index()

    def volatility_table(self, model: str) -> pd.DataFrame:
        """One row per (symbol, origin): `vol_pred`, `vol_true`, `vol_hist` (with
        `ForecastOptions(volatility=True)`; `evaluation.volatility`)."""
        return pd.concat(self.volatility[model], ignore_index=True)

    def horizon_returns(self, model: str) -> pd.DataFrame:
        return pd.concat(self.returns[model], ignore_index=True)

    def daily_ic(self, model: str) -> pd.DataFrame:
        """Per-date IC and RankIC of one model's predicted horizon return."""
        r = self.horizon_returns(model)
        args = (r["origin"].to_numpy(), r["pred_return"].to_numpy(), r["true_return"].to_numpy())
        return pd.concat(
            [M.daily_ic(*args, method="pearson"), M.daily_ic(*args, method="spearman")], axis=1
        )

    def _values(self, acc: dict[str, float], direction: float, origins: int) -> dict[str, float]:
        """The metrics of one sum table, its direction accuracy and its number of origins."""
        n = acc["n"]
        out = {
            "mae": acc["abs"] / n,
            "rmse": float(np.sqrt(acc["sq"] / n)),
            "mape": acc["ape"] / acc["ape_n"] if acc["ape_n"] else np.nan,
            "mase": acc["scaled"] / acc["scaled_n"] if acc["scaled_n"] else np.nan,
            "direction_accuracy": direction,
        }
        if self.sampled:
            out["crps"] = acc["crps"] / n
            for key in M.INTERVALS:
                out[key] = acc[key] / n
        out["origins"] = float(origins)
        return out

    def overall(self) -> dict[str, dict[str, float]]:
        """`{model: {metric: value}}` over all symbols; `skill` against `naive`."""
        result: dict[str, dict[str, float]] = {}
        for model in self.models:
            total = dict.fromkeys(self.SUMS, 0.0)
            for (m, _), acc in self.sums.items():
                if m == model:
                    for k in self.SUMS:
                        total[k] += acc[k]
            r = self.horizon_returns(model)
            direction = M.direction_accuracy(r["pred_return"], r["true_return"])
            result[model] = self._values(total, direction, len(r))
            daily = self.daily_ic(model)
            if daily.notna().any().any():
                result[model]["ic"], result[model]["icir"] = M.ic_summary(daily["ic"])
                result[model]["rank_ic"], result[model]["rank_icir"] = M.ic_summary(
                    daily["rank_ic"]
                )
        naive = result.get("naive", {}).get("mae")
        for values in result.values():
            values["skill"] = M.skill(values["mae"], naive) if naive is not None else np.nan
        return {model: _order(values) for model, values in result.items()}

    def by_symbol(self) -> pd.DataFrame:
        """One row per (model, symbol), with `skill` against naive on that symbol."""
        rows = []
        # One pass over each model's origins for every symbol at once: a filter per symbol
        # would scan every origin for each symbol, quadratic in the symbols.
        direction = {m: _direction_by_symbol(self.horizon_returns(m)) for m in self.models}
        for (model, symbol), acc in self.sums.items():
            accuracy, origins = direction[model].get(symbol, (np.nan, 0))
            rows.append({"model": model, "symbol": symbol, **self._values(acc, accuracy, origins)})
        table = pd.DataFrame(rows)
        naive = table[table.model == "naive"].set_index("symbol")["mae"]
        table["skill"] = 1.0 - table["mae"] / table["symbol"].map(naive)
        table.loc[~(table["symbol"].map(naive) > 0), "skill"] = np.nan
        return table.sort_values(["symbol", "model"], kind="stable").reset_index(drop=True)

    def calibration_table(self) -> pd.DataFrame:
        """Nominal quantile vs the share of actuals at or below it, per model."""
        rows = [
            {"model": model, "quantile": q, "observed": hits / n}
            for model, table in self.calibration.items()
            for q, (hits, n) in sorted(table.items())
        ]
        return pd.DataFrame(rows, columns=["model", "quantile", "observed"])


def _direction_by_symbol(returns: pd.DataFrame) -> dict[str, tuple[float, int]]:
    """symbol -> (direction accuracy, origins) of one model's horizon returns: the numbers of
    `metrics.direction_accuracy` on each symbol's rows (a share of whole counts: exact)."""
    codes, names = pd.factorize(returns["symbol"])
    pred = returns["pred_return"].to_numpy(np.float64)
    true = returns["true_return"].to_numpy(np.float64)
    hits = np.bincount(codes, weights=np.sign(pred) == np.sign(true), minlength=len(names))
    counts = np.bincount(codes, minlength=len(names))
    return {name: (float(hits[i] / counts[i]), int(counts[i])) for i, name in enumerate(names)}


def _origin_losses(batch: Batch, err: np.ndarray, scale: np.ndarray) -> pd.DataFrame:
    """Loss sums of each origin of a batch over its horizon steps (one row per origin)."""
    pos = scale > 0
    scaled = np.divide(np.abs(err), scale, out=np.zeros_like(err), where=pos)
    return pd.DataFrame(
        {
            "origin": batch.origin_ns.astype("datetime64[ns]"),
            "n": np.full(err.shape[0], err.shape[1], dtype=np.float64),
            "abs": np.abs(err).sum(axis=1),
            "sq": (err**2).sum(axis=1),
            "scaled": scaled.sum(axis=1),
            "scaled_n": pos.sum(axis=1).astype(np.float64),
            "crps": batch.crps.sum(axis=1) if batch.crps is not None else 0.0,
        }
    )


METRIC_ORDER = (
    "mae", "rmse", "mape", "mase", "skill", "direction_accuracy", "crps", "coverage_80",
    "coverage_90", "ic", "icir", "rank_ic", "rank_icir", "origins",
)  # fmt: skip


def _order(values: dict[str, float]) -> dict[str, float]:
    return {k: float(values[k]) for k in METRIC_ORDER if k in values}
