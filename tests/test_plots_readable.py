"""The forecast and evaluation plots read on intraday bars: a bar-index x axis labelled at
session starts (no width for nights, weekends, lunch breaks), the actual bars when known, a
title, a volume panel; evaluate's error by horizon step and cumulative IC, one line per model.
Structure is checked on the matplotlib objects, not on pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

from kronos_engine import plotting  # noqa: E402
from kronos_engine.data import generate_demo_frames  # noqa: E402
from kronos_engine.data.features import FEATURES  # noqa: E402
from kronos_engine.data.timeutil import bar_ticks  # noqa: E402

LOOKBACK, PRED = 96, 24


def _five_minute(symbols: int, length: int) -> dict[str, pd.DataFrame]:
    """A-share style 5-minute demo bars: 09:30-11:30 and 13:00-15:00, weekdays only."""
    return generate_demo_frames(symbols, length, freq="5min")


def _labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


def _assert_bar_index_axis(ax, stamps: pd.DatetimeIndex) -> None:
    """Integer tick positions at day starts, labelled with those days' dates."""
    ticks = ax.get_xticks()
    assert len(ticks) >= 2 and np.array_equal(ticks, np.round(ticks))
    for x, label in zip(ticks.astype(int), _labels(ax)):
        assert stamps[x].strftime("%m-%d") in label
        assert x == 0 or stamps[x].normalize() != stamps[x - 1].normalize()


def test_bar_ticks_label_days_and_mark_lunch_breaks():
    stamps = pd.DatetimeIndex(_five_minute(1, 48 * 3)["DEMO000"]["timestamps"])
    major, labels, minor = bar_ticks(stamps)
    assert major == [0, 48, 96]
    assert labels == [f"{stamps[0]:%Y-%m-%d}", f"{stamps[48]:%m-%d}", f"{stamps[96]:%m-%d}"]
    assert [f"{stamps[i]:%H:%M}" for i in minor] == ["13:00"] * 3  # the afternoon sessions
    daily = pd.bdate_range("2023-01-02", periods=140)
    major, labels, _ = bar_ticks(daily)
    assert labels == ["2023-01", "2023-02", "2023-03", "2023-04", "2023-05", "2023-06", "2023-07"]
    assert all(daily[i].day <= 3 for i in major[1:])


def _forecast(stamps: pd.DatetimeIndex, close: float) -> pd.DataFrame:
    values = {c: np.full(len(stamps), close) for c in FEATURES}
    return pd.DataFrame(values, index=pd.DatetimeIndex(stamps, name="timestamps"))


def test_the_forecast_figure_is_close_over_volume_on_bar_indices_with_the_actual_bars():
    frame = _five_minute(1, LOOKBACK + PRED)["DEMO000"]
    history, actual = frame.iloc[:LOOKBACK], frame.iloc[LOOKBACK:]
    forecast = _forecast(pd.DatetimeIndex(actual["timestamps"]), 40.0)
    forecast["close_q10"], forecast["close_q90"] = 39.0, 41.0
    fig = plotting.forecast_figure(history, forecast, [0.1, 0.9], actual, title="DEMO000 · exp")
    try:
        close, volume = fig.axes
        assert close.get_ylabel() == "close" and volume.get_ylabel() == "volume"
        lines = {line.get_label(): line for line in close.get_lines()}
        assert {"history (input)", "actual", "forecast (mean)"} <= set(lines)
        # One x unit per bar: the lunch breaks and the night between take no width.
        assert list(lines["history (input)"].get_xdata()) == list(range(LOOKBACK))
        x_true = np.asarray(lines["actual"].get_xdata())
        assert list(x_true) == list(range(LOOKBACK - 1, LOOKBACK + PRED))  # from the origin
        assert np.allclose(lines["actual"].get_ydata()[1:], actual["close"])
        assert len(volume.patches) == LOOKBACK + 2 * PRED  # history, actual, forecast volume
        _assert_bar_index_axis(volume, pd.DatetimeIndex(frame["timestamps"]))
        origin = pd.Timestamp(history["timestamps"].iloc[-1])
        title = close.get_title()
        assert title.startswith("DEMO000 · exp") and f"origin {origin:%Y-%m-%d %H:%M}" in title
        assert f"{PRED} bars ahead" in title
    finally:
        plotting.import_pyplot().close(fig)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """Randomly initialised tiny tokenizer and predictor folders (the plot needs no skill)."""
    import torch

    from kronos_engine.models import build_predictor
    from tests.engine_helpers import save_random_tokenizer

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    build_predictor("tiny").save_pretrained(root / "predictor")
    return save_random_tokenizer(root / "tokenizer"), root / "predictor"


def _figures(monkeypatch) -> list[Figure]:
    """Every figure predict draws, kept for inspection after it is written."""
    drawn: list[Figure] = []
    original = plotting.forecast_figure

    def recording(*args, **kwargs):
        drawn.append(original(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(plotting, "forecast_figure", recording)
    return drawn


@pytest.mark.parametrize("as_of", [True, False], ids=["as_of", "latest"])
def test_predict_plot_draws_the_actual_bars_after_as_of(models, tmp_path, monkeypatch, as_of):
    from kronos_engine.cli.predict import main

    frames = _five_minute(2, 48 * 5)
    data = tmp_path / "klines"
    data.mkdir()
    for symbol, frame in frames.items():
        frame.to_csv(data / f"{symbol}.csv", index=False)
    stamps = pd.DatetimeIndex(frames["DEMO000"]["timestamps"])
    cutoff = stamps[48 * 3 + 10]  # mid-morning: the forecast runs over lunch
    drawn = _figures(monkeypatch)
    tokenizer, predictor = models
    code = main([
        f"--tokenizer={tokenizer}", f"--predictor={predictor}", f"--data_path={data}",
        "--freq=5min", f"--lookback={LOOKBACK}", f"--pred_len={PRED}", "--top_k=1",
        f"--output={tmp_path / 'f.csv'}", f"--plot={tmp_path / 'plots'}",
        *([f"--as_of={cutoff}"] if as_of else []),
    ])  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["DEMO000.png", "DEMO001.png"]
    assert len(drawn) == 2
    for fig, (symbol, frame) in zip(drawn, frames.items()):
        close, volume = fig.axes
        labels = [line.get_label() for line in close.get_lines()]
        assert close.get_title().startswith(f"{symbol} · {predictor.parent.name}/predictor")
        if as_of:
            line = close.get_lines()[labels.index("actual")]
            after = frame[frame["timestamps"] > cutoff].iloc[:PRED]
            assert np.allclose(line.get_ydata()[1:], after["close"])
            assert f"origin {cutoff:%Y-%m-%d %H:%M}" in close.get_title()
            _assert_bar_index_axis(volume, stamps[48 * 3 + 11 - LOOKBACK :])
        else:
            assert "actual" not in labels  # no later bar is known
        assert max(close.get_lines()[labels.index("forecast (mean)")].get_xdata()) == (
            LOOKBACK + PRED - 1
        )


def _saved(monkeypatch) -> dict[str, Figure]:
    """File name -> the figure saved to it."""
    saved: dict[str, Figure] = {}
    original = Figure.savefig

    def recording(self, fname, *args, **kwargs):
        saved[Path(fname).name] = self
        return original(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    return saved


def test_evaluate_adds_error_by_horizon_and_cumulative_ic(tmp_path, monkeypatch):
    from kronos_engine.data.windows import WindowStore
    from kronos_engine.evaluation.baselines import DriftForecaster, NaiveForecaster
    from kronos_engine.evaluation.origins import plan_origins
    from kronos_engine.evaluation.report import write_evaluation
    from kronos_engine.evaluation.rolling import ForecastOptions

    lookback, pred = 30, 6
    frames = _five_minute(3, 48 * 8)
    segments = [
        (s, f[list(FEATURES)].to_numpy(np.float32),
         pd.DatetimeIndex(f["timestamps"]).as_unit("s").asi8)
        for s, f in frames.items()
    ]  # fmt: skip
    store = WindowStore.from_segments(segments, lookback + pred)
    origins = plan_origins(store, lookback, pred, stride=3)
    forecasters = {"naive": NaiveForecaster(), "drift": DriftForecaster()}
    saved = _saved(monkeypatch)
    out = tmp_path / "eval"
    opts = ForecastOptions(pred_len=pred, lookback=lookback)
    write_evaluation(store, origins, forecasters, opts, out, {}, progress=False)
    names = {p.name for p in out.iterdir()}
    assert {"error_by_horizon.png", "cumulative_ic.png", "forecast_vs_actual.png"} <= names

    (ax,) = saved["error_by_horizon.png"].axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"naive", "drift"}
    for line in lines.values():
        assert list(line.get_xdata()) == list(range(1, pred + 1))
        assert np.isfinite(line.get_ydata()).all()
    naive = lines["naive"].get_ydata()
    assert naive[-1] > naive[0]  # a last-close forecast drifts off with the horizon

    ic, rank_ic = saved["cumulative_ic.png"].axes
    for panel in (ic, rank_ic):
        labels = [line.get_label() for line in panel.get_lines() if line.get_label()[0] != "_"]
        assert labels == ["naive (no IC: same forecast return everywhere)", "drift"]
    dates = pd.DatetimeIndex(sorted(set(store.stamps[origins.row] * 10**9)))
    _assert_bar_index_axis(rank_ic, dates)

    panels = saved["forecast_vs_actual.png"].axes
    assert len(panels) == 3
    f = pd.read_parquet(out / "forecasts.parquet")
    targets = f[(f.symbol == "DEMO000") & (f.horizon == pred)]["timestamp"]
    _assert_bar_index_axis(panels[0], pd.DatetimeIndex(targets.drop_duplicates().sort_values()))
