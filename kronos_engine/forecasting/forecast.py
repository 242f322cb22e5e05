"""What a forecast is: `B` series' sample paths and point path as arrays (`Forecast`), and how it
reads as the public API's DataFrames (one frame per series; one column per column and quantile).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kronos_engine.data.features import FEATURES

COLUMNS = list(FEATURES)  # the DataFrame columns in, and out, of every forecast


@dataclass(frozen=True)
class Forecast:
    """Forecasts of `B` series on the price scale, as arrays."""

    samples: np.ndarray  # (B, sample_count, pred_len, 6) float32, every sample path
    point: np.ndarray  # (B, pred_len, 6): the mean path (a deterministic forecaster's path)

    def quantile(self, q: float) -> np.ndarray:
        """`(B, pred_len, 6)`: the `q` quantile over each series' sample paths."""
        return np.stack([np.quantile(paths, q, axis=0) for paths in self.samples])


def quantile_column(column: str, q: float) -> str:
    """`close` and 0.1 -> `close_q10`."""
    return f"{column}_q{format(q * 100, 'g')}"


def forecast_frames_of(
    forecast: Forecast, indexes: Sequence[Any], quantiles: list[float]
) -> list[pd.DataFrame]:
    """Each series' mean path as the public frame, then one column per (column, quantile)."""
    frames = [pd.DataFrame(p, columns=COLUMNS, index=i) for p, i in zip(forecast.point, indexes)]
    for q in quantiles:
        values = forecast.quantile(q)
        for frame, v in zip(frames, values):
            for j, column in enumerate(COLUMNS):
                frame[quantile_column(column, q)] = v[:, j]
    return frames
