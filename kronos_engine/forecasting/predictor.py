"""`KronosPredictor`: the public DataFrame forecasting API, on the KV-cached generator.

Code written for the public class runs unchanged: same constructor, same `predict` /
`predict_batch` arguments and DataFrames, same normalisation (the context's mean and
population std, `+ 1e-5`, clipped), and with `top_k=1` the same numbers. Beyond it: loading
from model folders or a training run, histories of different lengths in one batch, inferred
future timestamps, every sample path, quantiles, a seed, and bf16. A `pred_len` beyond
`max_context` is forecast (the window slides, `generation.decode_future`); a history longer
than `max_context` is read as the public predictor reads it (the predictor sees its last
`max_context` tokens), with a warning saying so. Bad options are refused by the rules of
`forecasting.options` and the device rule of `config.rules`, one line naming the argument.

Underneath is an array core, `forecast_arrays` (bars and epoch seconds in, a `Forecast` of
sample paths out), which the DataFrame methods call after reading their frames and which the
rolling evaluation calls directly; the sampling travels as one `SamplingOptions` value.

Each forecast draws its tokens from its own random stream, keyed by the seed and the series'
identity: `(key, origin)`, where `origin` is the epoch second of the history's last bar and
`key` is the series' entry in `keys=` (e.g. its symbol), or without `keys` its position in
`df_list` (0 for `predict`). So a series' sample paths do not depend on what else is in the
batch: forecasting a list in chunks, one at a time or across processes gives the same numbers
when each series keeps its key (pass `keys=`). Without a seed the stream's base is drawn from
torch's global generator (`torch.manual_seed` makes it repeatable).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from kronos_engine.config.rules import resolve_device
from kronos_engine.data.features import TIME_FEATURES, normalise, stamp_seconds, time_features
from kronos_engine.errors import ForecastError
from kronos_engine.forecasting.calendars import check_calendar
from kronos_engine.forecasting.forecast import (
    Forecast,
    forecast_frames_of,
)
from kronos_engine.forecasting.generation import generate_paths
from kronos_engine.forecasting.inputs import (
    AMOUNT_COLUMN,
    PRICE_COLUMNS,
    VOLUME_COLUMN,
    history_stamps,
    ohlcv_values,
    per_series,
    resolve_pred_len,
)
from kronos_engine.forecasting.options import SamplingOptions, check_count, check_quantiles
from kronos_engine.forecasting.pairing import check_tokenizer_pairing
from kronos_engine.forecasting.sampling import series_key
from kronos_engine.forecasting.timestamps import as_datetime_index, infer_future_stamps
from kronos_engine.models import Kronos, KronosTokenizer


@dataclass
class ModelInputs:
    """The model's view of each history: normalised context, calendar features of history and
    future, and the `mean` / `scale` (`(1, 6)` float32) that undo the normalisation."""

    contexts: list[np.ndarray]  # (C_i, 6) float32
    stamps: list[np.ndarray]  # (C_i + pred_len, 5) float32
    means: list[np.ndarray]
    scales: list[np.ndarray]


@dataclass
class _Series:
    """One history from a DataFrame: its values, stamps and the index of the returned frame."""

    values: np.ndarray  # (C, 6) float32
    x_seconds: np.ndarray  # (C,) naive epoch seconds
    y_seconds: np.ndarray  # (pred_len,)
    future: Any  # the index of the returned frame


class KronosPredictor:
    """Forecast OHLCV DataFrames with a Kronos tokenizer and predictor."""

    def __init__(
        self,
        model: Kronos,
        tokenizer: KronosTokenizer,
        device: str | torch.device | None = None,
        max_context: int = 512,
        clip: float = 5,
        *,
        precision: str = "fp32",
        use_cache: bool = True,
    ) -> None:
        device = resolve_device(device, "device", ForecastError)
        if precision not in ("fp32", "bf16"):
            raise ForecastError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        max_context = check_count(max_context, "max_context")
        if model.s1_bits != tokenizer.s1_bits or model.s2_bits != tokenizer.s2_bits:
            raise ForecastError(
                f"predictor s1/s2 bits ({model.s1_bits}, {model.s2_bits}) differ from the "
                f"tokenizer's ({tokenizer.s1_bits}, {tokenizer.s2_bits})"
            )
        self.device = device
        self.tokenizer = tokenizer.to(self.device)
        self.model = model.to(self.device)
        self.max_context = int(max_context)
        self.clip = clip
        self.precision = precision
        self.use_cache = use_cache
        self.price_cols = list(PRICE_COLUMNS)
        self.vol_col, self.amt_vol = VOLUME_COLUMN, AMOUNT_COLUMN
        self.time_cols = list(TIME_FEATURES)

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        tokenizer_dir: str | Path,
        predictor_dir: str | Path,
        device: str | torch.device | None = None,
        max_context: int = 512,
        clip: float = 5,
        **kwargs: Any,
    ) -> KronosPredictor:
        """From model folders (`config.json` + `model.safetensors`: ours or the public ones);
        a predictor trained here must get the tokenizer it recorded (`pairing.py`)."""
        tokenizer = KronosTokenizer.from_pretrained(tokenizer_dir)
        model = Kronos.from_pretrained(predictor_dir)
        check_tokenizer_pairing(tokenizer, tokenizer_dir, predictor_dir)
        return cls(model, tokenizer, device, max_context, clip, **kwargs)

    @classmethod
    def from_run(
        cls,
        run: str | Path,
        device: str | torch.device | None = None,
        max_context: int = 512,
        clip: float | None = None,
        **kwargs: Any,
    ) -> KronosPredictor:
        """From an experiment dir (`<exp_dir>/predictor`) or a predictor run dir: its `best/`
        with exactly the tokenizer it trained with, and the run's `clip`."""
        from kronos_engine.run.finished import find_predictor_run

        found = find_predictor_run(run)
        clip = found.clip if clip is None else clip
        return cls.from_pretrained(
            found.tokenizer_dir, found.predictor_dir, device, max_context, clip, **kwargs
        )

    # ---- the public API ------------------------------------------------------------------
    def predict(
        self,
        df: pd.DataFrame,
        x_timestamp: Any = None,
        y_timestamp: Any = None,
        pred_len: int | None = None,
        T: float = 1.0,
        top_k: int = 0,
        top_p: float = 0.9,
        sample_count: int = 1,
        verbose: bool = True,
        *,
        quantiles: Sequence[float] | None = None,
        return_samples: bool = False,
        seed: int | None = None,
        calendar: str | None = None,
        key: Any = None,
    ) -> pd.DataFrame | tuple[pd.DataFrame, np.ndarray]:
        """Forecast `pred_len` bars after `df` (the mean over `sample_count` sample paths).

        `x_timestamp` defaults to `df`'s DatetimeIndex or its `timestamps` column;
        `y_timestamp` defaults to the history's frequency continued, or with `calendar` (an
        `exchange_calendars` name such as `XSHG`, or `24/7`) to that exchange's next sessions
        and bar times (`forecasting.calendars`). With `quantiles`, adds
        `<column>_q<percent>` columns; with `return_samples`, returns `(frame, samples)` where
        `samples` is `(sample_count, pred_len, 6)` on the price scale. `key` names the series
        in its random stream (default 0: `predict_batch`'s first series).
        """
        options = SamplingOptions(T, top_k, top_p, sample_count, seed)
        frames, samples = self.forecast_frames(
            [df], [x_timestamp], [y_timestamp], pred_len, options, quantiles=quantiles,
            verbose=verbose, calendar=calendar, keys=None if key is None else [key],
        )  # fmt: skip
        return (frames[0], samples[0]) if return_samples else frames[0]

    def predict_batch(
        self,
        df_list: Sequence[pd.DataFrame],
        x_timestamp_list: Sequence[Any] | None = None,
        y_timestamp_list: Sequence[Any] | None = None,
        pred_len: int | None = None,
        T: float = 1.0,
        top_k: int = 0,
        top_p: float = 0.9,
        sample_count: int = 1,
        verbose: bool = True,
        *,
        quantiles: Sequence[float] | None = None,
        return_samples: bool = False,
        seed: int | None = None,
        calendar: str | None = None,
        keys: Sequence[Any] | None = None,
    ) -> list[pd.DataFrame] | tuple[list[pd.DataFrame], np.ndarray]:
        """`predict` for several series in one batch; histories may differ in length (each
        result equals predicting that series alone, with its key). With `return_samples`,
        returns `(frames, samples)` with `samples` `(n_series, sample_count, pred_len, 6)`.
        `keys` (one per frame, e.g. symbols) name the series in their random streams."""
        if not isinstance(df_list, (list, tuple)) or not df_list:
            raise ForecastError("df_list must be a non-empty list of DataFrames")
        n = len(df_list)
        x_list = per_series(x_timestamp_list, n, "x_timestamp_list")
        y_list = per_series(y_timestamp_list, n, "y_timestamp_list")
        options = SamplingOptions(T, top_k, top_p, sample_count, seed)
        frames, samples = self.forecast_frames(
            df_list, x_list, y_list, pred_len, options, quantiles=quantiles, verbose=verbose,
            calendar=calendar, keys=keys,
        )  # fmt: skip
        return (frames, samples) if return_samples else frames

    def forecast_frames(
        self,
        dfs: Sequence[pd.DataFrame],
        x_stamps: Sequence[Any],
        y_stamps: Sequence[Any],
        pred_len: int | None,
        options: SamplingOptions,
        *,
        quantiles: Sequence[float] | None = None,
        verbose: bool = False,
        calendar: str | None = None,
        keys: Sequence[Any] | None = None,
    ) -> tuple[list[pd.DataFrame], np.ndarray]:
        """`predict_batch` with the sampling as one value (one stamp entry, or None, per
        frame): `(frames, samples)`, always both."""
        qs = check_quantiles(quantiles, options.sample_count)
        calendar = check_calendar(calendar, "calendar")
        pred_len = resolve_pred_len(pred_len, y_stamps)
        series = [
            self._series(df, x, y, pred_len, i if len(dfs) > 1 else None, calendar)
            for i, (df, x, y) in enumerate(zip(dfs, x_stamps, y_stamps))
        ]
        forecast = self.forecast_arrays(
            [s.values for s in series], [s.x_seconds for s in series],
            [s.y_seconds for s in series], pred_len, options, verbose=verbose, keys=keys,
        )  # fmt: skip
        frames = forecast_frames_of(forecast, [s.future for s in series], qs)
        return frames, forecast.samples

    def forecast_arrays(
        self,
        values: np.ndarray | Sequence[np.ndarray],
        x_seconds: np.ndarray | Sequence[np.ndarray],
        y_seconds: np.ndarray | Sequence[np.ndarray],
        pred_len: int,
        options: SamplingOptions,
        *,
        verbose: bool = False,
        keys: Sequence[Any] | None = None,
    ) -> Forecast:
        """The array core under the DataFrame API: forecast `pred_len` bars after each history.

        `values[i]` `(C_i, 6)` are finite bars on the price scale (`(B, C, 6)` when the
        histories have one length), `x_seconds[i]` `(C_i,)` their naive epoch seconds and
        `y_seconds[i]` `(pred_len,)` those of the bars to forecast. Each history is normalised
        with its own mean and std (float32, `features.normalise`), the paths are denormalised.
        Series i samples from the stream of `(keys[i], x_seconds[i][-1])` (`keys`: None is
        the positions 0, 1, ...) and the seed.
        """
        inputs = self.model_inputs(values, x_seconds, y_seconds, pred_len)
        streams = self._stream_keys(options, keys, x_seconds)
        longest = max(len(x) for x in inputs.contexts)
        if longest > self.max_context:
            warnings.warn(
                f"a history of {longest} bars is longer than max_context {self.max_context}: "
                f"the predictor sees its last {self.max_context} tokens (its mean and std use "
                "every bar, as in the public predictor); pass at most max_context bars, or "
                "raise max_context",
                UserWarning,
                stacklevel=2,
            )
        paths = self._generate(inputs.contexts, inputs.stamps, pred_len, options, verbose, streams)
        samples = np.stack(
            [p * s + m for p, s, m in zip(paths.astype(np.float32), inputs.scales, inputs.means)]
        )
        return Forecast(samples, np.stack([s.mean(axis=0) for s in samples]))

    def model_inputs(
        self,
        values: np.ndarray | Sequence[np.ndarray],
        x_seconds: np.ndarray | Sequence[np.ndarray],
        y_seconds: np.ndarray | Sequence[np.ndarray],
        pred_len: int,
    ) -> ModelInputs:
        """What the model is given for `forecast_arrays`' arguments (nothing is run).

        Each history is normalised column-major, the layout of a DataFrame's values, so that
        the float32 mean and std (numpy sums a contiguous column pairwise) are those of the
        DataFrame API, and the public predictor's, to the bit, whatever the caller's layout.
        """
        inputs = ModelInputs([], [], [], [])
        for i, (v, xs, ys) in enumerate(zip(values, x_seconds, y_seconds)):
            v = np.asfortranarray(v, dtype=np.float32)
            if v.ndim != 2 or len(xs) != len(v) or len(ys) != pred_len:
                raise ForecastError(
                    f"series {i}: values {v.shape}, {len(xs)} x stamps and {len(ys)} y stamps "
                    f"do not fit (rows, 6), rows and pred_len {pred_len}"
                )
            x, mean, scale = normalise(v, clip=self.clip, dtype=np.float32)
            inputs.contexts.append(x)
            inputs.stamps.append(time_features(np.concatenate([xs, ys])))
            inputs.means.append(mean)
            inputs.scales.append(scale)
        return inputs

    # ---- internals -----------------------------------------------------------------------
    def _stream_keys(
        self, options: SamplingOptions, keys: Sequence[Any] | None, x_seconds: Sequence[Any]
    ) -> torch.Tensor:
        """One int64 stream key per series: `series_key(seed, (key, origin second))`."""
        if keys is not None and (isinstance(keys, (str, bytes)) or len(keys) != len(x_seconds)):
            raise ForecastError(f"keys: expected one per series ({len(x_seconds)}), got {keys!r}")
        names = range(len(x_seconds)) if keys is None else keys
        seed = options.seed
        if seed is None:  # the global generator picks the base: torch.manual_seed repeats it
            seed = int(torch.randint(0, 2**63 - 1, (1,)).item())
        streams = [series_key(seed, (k, int(xs[-1]))) for k, xs in zip(names, x_seconds)]
        return torch.tensor(streams, dtype=torch.long, device=self.device)

    def _generate(
        self,
        contexts: list[np.ndarray],
        stamps: list[np.ndarray],
        pred_len: int,
        options: SamplingOptions,
        verbose: bool,
        keys: torch.Tensor,
    ) -> np.ndarray:
        with tqdm(total=pred_len, desc="forecast", disable=not verbose, leave=False) as bar:
            paths = generate_paths(
                self.tokenizer,
                self.model,
                [torch.from_numpy(x) for x in contexts],
                [torch.from_numpy(s) for s in stamps],
                pred_len,
                options,
                max_context=self.max_context,
                clip=self.clip,
                use_cache=self.use_cache,
                precision=self.precision,
                on_step=bar.update,
                keys=keys,
            )
        return paths.float().cpu().numpy()

    def _series(
        self,
        df: pd.DataFrame,
        x_timestamp: Any,
        y_timestamp: Any,
        pred_len: int,
        i: int | None,
        calendar: str | None = None,
    ) -> _Series:
        where = "df" if i is None else f"df_list[{i}]"
        values = ohlcv_values(df, where)
        x_index = history_stamps(df, x_timestamp, where)
        if len(x_index) != len(values):
            raise ForecastError(
                f"{where}: {len(values)} rows but {len(x_index)} x_timestamp values"
            )
        if y_timestamp is None:
            future = infer_future_stamps(x_index, pred_len, calendar)
            y_index = future
        else:
            future = y_timestamp
            y_index = as_datetime_index(y_timestamp, f"{where} y_timestamp")
            if len(y_index) != pred_len:
                raise ForecastError(
                    f"{where}: y_timestamp has {len(y_index)} rows, pred_len is {pred_len}"
                )
        return _Series(values, stamp_seconds(x_index), stamp_seconds(y_index), future)
