"""Exchange calendars for forecasts (issue 20, item 4): `--calendar` on `scripts/predict.py`
and `calendar=` on `KronosPredictor` stamp the future on an exchange's sessions, lunch breaks
and holidays (`exchange_calendars`, the `calendars` extra), or without gaps for `24/7`.

Every expected stamp is read from `exchange_calendars` itself (its sessions, opens, breaks and
closes), not written out by hand. The tests that need the library skip without it; the one
that checks the message for a missing library blocks the import in a subprocess.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_faults_bad_input import EXIT_USAGE, _assert_untouched, snapshot

from kronos_engine import KronosPredictor
from kronos_engine.cli.predict import main as predict_main
from kronos_engine.errors import ForecastError
from kronos_engine.forecasting.timestamps import infer_future_stamps
from kronos_engine.models import build_predictor, build_tokenizer

REPO = Path(__file__).resolve().parents[1]
HAVE_CALENDARS = importlib.util.find_spec("exchange_calendars") is not None
needs_calendars = pytest.mark.skipif(
    not HAVE_CALENDARS, reason="exchange_calendars is not installed (the calendars extra)"
)


def sessions(name: str, start: str, end: str) -> pd.DatetimeIndex:
    """The exchange's own sessions (naive dates) from `start` to `end`."""
    import exchange_calendars

    return exchange_calendars.get_calendar(name, start=start, end=end).sessions


def five_minute_bars(name: str, days: pd.DatetimeIndex, at_close: bool) -> pd.DatetimeIndex:
    """The exchange's 5-minute bars of `days` on its wall clock, from its opens, breaks and
    closes: stamped at each bar's close (09:35 ... 15:00) or at its open (09:30 ... 14:55)."""
    import exchange_calendars

    cal = exchange_calendars.get_calendar(name, start=days[0], end=days[-1])
    wall = lambda t: t.tz_convert(cal.tz).tz_localize(None)  # noqa: E731
    out: list[pd.Timestamp] = []
    for day in days:
        bounds = [cal.opens[day], cal.break_starts[day], cal.break_ends[day], cal.closes[day]]
        parts = [(bounds[0], bounds[3])] if pd.isna(bounds[1]) else [bounds[:2], bounds[2:]]
        for start, end in parts:
            grid = pd.date_range(wall(start), wall(end), freq="5min")
            out.extend(grid[1:] if at_close else grid[:-1])
    return pd.DatetimeIndex(out)


def bars_frame(stamps: pd.DatetimeIndex) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    close = 10 * np.exp(np.cumsum(rng.normal(0, 0.01, len(stamps))))
    return pd.DataFrame(
        {
            "timestamps": stamps,
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": rng.integers(100, 1000, len(stamps)).astype(float),
            "amount": close * 500,
        }
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """Tiny random tokenizer and predictor folders for `--tokenizer` / `--predictor`."""
    root = tmp_path_factory.mktemp("calendar_models")
    torch.manual_seed(0)
    build_tokenizer("tiny").save_pretrained(root / "tok")
    build_predictor("tiny").save_pretrained(root / "pred")
    return root / "tok", root / "pred"


@pytest.fixture(scope="module")
def tiny() -> KronosPredictor:
    torch.manual_seed(0)
    return KronosPredictor(
        build_predictor("tiny"), build_tokenizer("tiny"), device="cpu", max_context=64
    )


def predict_csv(models, tmp_path: Path, stamps: pd.DatetimeIndex, *flags: str) -> pd.DataFrame:
    """`scripts/predict.py` (in this process) on one CSV symbol with these stamps."""
    data = tmp_path / "klines"
    data.mkdir(exist_ok=True)
    frame = bars_frame(stamps)
    frame["timestamps"] = frame["timestamps"].dt.strftime("%Y-%m-%d %H:%M:%S")
    frame.to_csv(data / "AAA.csv", index=False)
    out = tmp_path / "f.csv"
    code = predict_main(
        [f"--tokenizer={models[0]}", f"--predictor={models[1]}", f"--data_path={data}",
         "--lookback=40", "--top_k=1", "--device=cpu", f"--output={out}", *flags]
    )  # fmt: skip
    assert code == 0
    return pd.read_csv(out, parse_dates=["timestamp"])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- predict.py -----------------------------------------------------------------------------


@needs_calendars
def test_daily_xshg_forecast_skips_golden_week(models, tmp_path):
    days = sessions("XSHG", "2024-06-03", "2024-09-27")
    table = predict_csv(models, tmp_path, days, "--pred_len=5", "--calendar=XSHG")
    expected = sessions("XSHG", "2024-09-28", "2024-10-31")[:5]
    assert list(table["timestamp"]) == list(expected)
    assert table["timestamp"][0] == pd.Timestamp("2024-09-30")
    assert table["timestamp"][1] == pd.Timestamp("2024-10-08")  # 10-01..07: Golden Week
    # Without --calendar, today's rule: business days, through the holiday.
    table = predict_csv(models, tmp_path, days, "--pred_len=3")
    assert list(table["timestamp"]) == list(pd.bdate_range("2024-09-30", periods=3))


@needs_calendars
def test_intraday_xshg_forecast_skips_the_lunch_break_and_the_night(models, tmp_path):
    """From 11:00 on 2024-09-30: 11:05 ... 11:30, 13:05 ... 15:00, then (night and Golden
    Week) 2024-10-08 09:35."""
    history = five_minute_bars("XSHG", sessions("XSHG", "2024-09-26", "2024-09-30"), True)
    history = history[history <= pd.Timestamp("2024-09-30 11:00")]
    table = predict_csv(models, tmp_path, history, "--pred_len=32", "--calendar=XSHG")
    later = five_minute_bars("XSHG", sessions("XSHG", "2024-09-30", "2024-10-10"), True)
    assert list(table["timestamp"]) == list(later[later > history[-1]][:32])
    stamps = table["timestamp"]
    assert stamps.iloc[5] == pd.Timestamp("2024-09-30 11:30")
    assert stamps.iloc[6] == pd.Timestamp("2024-09-30 13:05")  # after the 11:30-13:00 break
    assert stamps.iloc[29] == pd.Timestamp("2024-09-30 15:00")
    assert stamps.iloc[30] == pd.Timestamp("2024-10-08 09:35")  # the night, then the holiday


@needs_calendars
def test_open_stamped_bars_continue_at_their_open(tiny):
    """Bars stamped 09:30 ... 14:55 (at their open) continue that way: 13:00 after 11:25."""
    history = five_minute_bars("XSHG", sessions("XSHG", "2024-09-26", "2024-09-27"), False)
    last = history.get_loc(pd.Timestamp("2024-09-27 11:20"))
    future = infer_future_stamps(history[: last + 1], 3, "XSHG")
    assert list(future) == [pd.Timestamp(t) for t in
                            ("2024-09-27 11:25", "2024-09-27 13:00", "2024-09-27 13:05")]  # fmt: skip
    night = infer_future_stamps(history, 1, "XSHG")
    assert list(night) == [pd.Timestamp("2024-09-30 09:30")]


@needs_calendars
def test_unknown_calendar_is_one_line_naming_the_flag(models, tmp_path, capsys):
    out = tmp_path / "f.csv"
    out.write_text("previous results\n")
    before = snapshot(tmp_path)
    code = predict_main(
        [f"--tokenizer={models[0]}", f"--predictor={models[1]}", "--data_path=nowhere",
         "--calendar=XSHGG", f"--output={out}"]
    )  # fmt: skip
    assert code == EXIT_USAGE
    line = one_error_line(capsys)
    assert line.startswith("error: --calendar: unknown calendar 'XSHGG'")
    assert "get_calendar_names" in line and "24/7" in line
    _assert_untouched(before, snapshot(tmp_path))


@needs_calendars
def test_a_last_bar_off_the_calendar_skips_the_symbol_in_one_line(models, tmp_path, capsys):
    """A history ending on a day the exchange is closed: the calendar is the wrong one."""
    days = sessions("XNYS", "2024-06-03", "2024-07-03").append(pd.DatetimeIndex(["2024-07-04"]))
    out = tmp_path / "f.csv"
    data = tmp_path / "klines"
    data.mkdir()
    bars_frame(days).to_csv(data / "AAA.csv", index=False)
    code = predict_main(
        [f"--tokenizer={models[0]}", f"--predictor={models[1]}", f"--data_path={data}",
         "--lookback=10", "--pred_len=2", "--calendar=XNYS", f"--output={out}"]
    )  # fmt: skip
    assert code == EXIT_USAGE and not out.exists()
    line = one_error_line(capsys)
    assert "no symbol could be forecast: AAA: calendar XNYS: the last bar 2024-07-04" in line
    assert "not on a XNYS session" in line


# --- the API --------------------------------------------------------------------------------


@needs_calendars
def test_xnys_forecast_skips_a_us_holiday(tiny):
    days = sessions("XNYS", "2024-05-01", "2024-07-03")
    frame = bars_frame(days + pd.Timedelta(hours=16))
    result = tiny.predict(frame, pred_len=3, top_k=1, verbose=False, calendar="XNYS")
    expected = sessions("XNYS", "2024-07-04", "2024-07-31")[:3] + pd.Timedelta(hours=16)
    assert list(result.index) == list(expected)
    assert pd.Timestamp("2024-07-04 16:00") not in set(result.index)  # Independence Day
    assert result.index[0] == pd.Timestamp("2024-07-05 16:00")


@needs_calendars
def test_the_api_keyword_on_a_batch_and_a_tz_aware_history(tiny):
    """`predict_batch(calendar=)`: UTC stamps of A-share bars follow Shanghai's sessions."""
    history = five_minute_bars("XSHG", sessions("XSHG", "2024-09-26", "2024-09-27"), True)
    utc = history.tz_localize("Asia/Shanghai").tz_convert("UTC")
    frames = [bars_frame(history[:48]), bars_frame(utc[48:])]
    out = tiny.predict_batch(frames, pred_len=2, top_k=1, verbose=False, calendar="XSHG")
    assert list(out[0].index) == [
        pd.Timestamp("2024-09-27 09:35"),
        pd.Timestamp("2024-09-27 09:40"),
    ]
    expected = pd.DatetimeIndex(["2024-09-30 09:35", "2024-09-30 09:40"], tz="Asia/Shanghai")
    assert list(out[1].index) == list(expected.tz_convert("UTC"))
    with pytest.raises(ForecastError, match=r"^calendar: unknown calendar 'nope'"):
        tiny.predict(frames[0], pred_len=2, verbose=False, calendar="nope")


def test_24_7_continues_through_the_weekend(tiny):
    """Crypto bars: Friday 23:00, then Saturday and Sunday without a gap."""
    stamps = pd.date_range("2024-06-07 20:00", "2024-06-07 23:00", freq="h")
    result = tiny.predict(bars_frame(stamps), pred_len=49, top_k=1, verbose=False, calendar="24/7")
    assert list(result.index) == list(pd.date_range("2024-06-08 00:00", periods=49, freq="h"))
    daily = pd.bdate_range("2024-05-01", "2024-06-07")  # weekday-only history, 24/7 calendar
    assert list(infer_future_stamps(daily, 2, "24/7")) == [
        pd.Timestamp("2024-06-08"), pd.Timestamp("2024-06-09")
    ]  # fmt: skip


@needs_calendars
def test_a_forecast_past_the_librarys_recorded_holidays_is_one_line():
    import exchange_calendars

    end = exchange_calendars.get_calendar("XSHG").bound_max()
    days = sessions("XSHG", str((end - pd.Timedelta(days=60)).date()), str(end.date()))
    with pytest.raises(ForecastError, match=r"run past .*the last session exchange_calendars"):
        infer_future_stamps(days, 5, "XSHG")


# --- without the extra ----------------------------------------------------------------------


def test_without_the_extra_the_flag_says_how_to_install_it(tmp_path):
    """`exchange_calendars` blocked in a fresh interpreter (an import of it fails as when it
    is not installed): one line naming --calendar and the extra; 24/7 still works."""
    code = (
        "import sys; sys.modules['exchange_calendars'] = None\n"
        "import pandas as pd\n"
        "from kronos_engine.forecasting.timestamps import infer_future_stamps\n"
        "from kronos_engine.cli.predict import main\n"
        "s = pd.date_range('2024-06-07 22:00', periods=2, freq='h')\n"
        "assert infer_future_stamps(s, 2, '24/7')[-1] == pd.Timestamp('2024-06-08 01:00')\n"
        "sys.exit(main(['--tokenizer=t', '--predictor=p', '--calendar=XSHG']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.returncode == EXIT_USAGE, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: --calendar: 'XSHG' needs the 'exchange_calendars' package; install it with "
        "pip install 'kronos-engine[calendars]'"
    ], proc.stderr
    assert "Traceback" not in proc.stderr
