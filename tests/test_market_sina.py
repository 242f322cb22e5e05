"""`data_source: sina` against a real HTTP server on 127.0.0.1 speaking the K-line service's
JSONP (no test touches the internet): the request, the store growing over incremental
fetches (duplicates, overlaps, a corrected last bar, older bars the service no longer
serves), throttling, server errors, malformed and empty answers, an unknown symbol, an
offline service, a kill during a fetch, and fetch-then-train."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from engine_helpers import run, tiny_cfg
from market_server import Loopback, kill_download_midway
from test_faults_bad_input import EXIT_USAGE, _assert_untouched, snapshot

from kronos_engine.cli.download import main as download_main
from kronos_engine.cli.pipeline import pipeline_main
from kronos_engine.data import load_frames

REPO = Path(__file__).resolve().parents[1]
PATH = "/cn/api/jsonp_v2.php/=/CN_MarketDataService.getKLineData"
PREFIX = "/*<script>location.href='//sina.com';</script>*/\n"
FAST = ["--fetch_backoff=0.01", "--fetch_interval=0", "--fetch_timeout=5"]


def session_times(days: int, start: str = "2024-06-17") -> list[str]:
    """5-minute A-share bar times (09:35-11:30, 13:05-15:00), business days."""
    out = []
    for day in pd.bdate_range(start, periods=days):
        for first, last in (("09:35", "11:30"), ("13:05", "15:00")):
            stamps = pd.date_range(f"{day.date()} {first}", f"{day.date()} {last}", freq="5min")
            out += [str(s) for s in stamps]
    return out


def sina_bar(day: str, i: int) -> dict[str, str]:
    base = 10 + 0.01 * (i % 97) + 0.002 * (i % 7)
    return {
        "day": day,
        "open": f"{base:.3f}",
        "high": f"{base + 0.05:.3f}",
        "low": f"{base - 0.04:.3f}",
        "close": f"{base + 0.01:.3f}",
        "volume": str(1000 + 100 * (i % 13)),
    }


def jsonp(bars) -> str:
    return f"{PREFIX}=({json.dumps(bars)});"


class Sina:
    """The service: each symbol's bars; `window` is the slice it serves now (history moves on
    and old bars drop out, as Sina's limited minute history does)."""

    def __init__(self, bars: dict[str, list[dict[str, str]]]) -> None:
        self.bars = bars
        self.window = {s: (0, len(b)) for s, b in bars.items()}
        self.server = Loopback(self.answer)
        self.url = self.server.url + PATH

    def answer(self, path: str, query: dict[str, str]):
        if path != PATH:
            return 404, "not found"
        symbol = query.get("symbol", "")
        if symbol not in self.bars:
            return 200, f"{PREFIX}=(null);"
        start, end = self.window[symbol]
        served = self.bars[symbol][start:end][-int(query["datalen"]) :]
        return 200, jsonp(served)


@pytest.fixture
def sina():
    times = session_times(10)
    service = Sina(
        {
            "sh600519": [sina_bar(t, i) for i, t in enumerate(times)],
            "sz000001": [sina_bar(t, i + 5) for i, t in enumerate(times)],
        }
    )
    yield service
    service.server.close()


def download(sina: Sina, folder: Path, *extra: str, symbols: str = "sh600519") -> int:
    args = ["--source=sina", f"--sina_url={sina.url}", f"--data_path={folder}"]
    return download_main([*args, f"--instruments={symbols}", "--freq=5min", *FAST, *extra])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def stored(folder: Path, symbol: str) -> pd.DataFrame:
    return pd.read_csv(folder / f"{symbol}.csv", parse_dates=["timestamps"])


def test_the_request_and_the_stored_file(sina, tmp_path, capsys):
    sina.window["sh600519"] = (0, 100)
    assert download(sina, tmp_path / "bars") == 0
    ((_, path, query),) = sina.server.requests
    assert path == PATH
    assert query == {"symbol": "sh600519", "scale": "5", "ma": "no", "datalen": "1970"}
    frame = stored(tmp_path / "bars", "sh600519")
    assert list(frame.columns) == ["timestamps", "open", "high", "low", "close", "volume"]
    assert len(frame) == 100
    first = sina.bars["sh600519"][0]
    assert str(frame["timestamps"].iloc[0]) == first["day"]
    assert frame["open"].iloc[0] == float(first["open"])
    assert frame["volume"].iloc[0] == float(first["volume"])
    assert "100 new" in capsys.readouterr().out


def test_daily_bars_use_scale_240(sina, tmp_path):
    days = [str(d.date()) for d in pd.bdate_range("2024-01-02", periods=30)]
    sina.bars["sh600000"] = [sina_bar(d, i) for i, d in enumerate(days)]
    sina.window["sh600000"] = (0, 30)
    args = ["--source=sina", f"--sina_url={sina.url}", f"--data_path={tmp_path}"]
    assert download_main([*args, "--instruments=SH600000", "--freq=day", *FAST]) == 0
    assert sina.server.requests[0][2]["scale"] == "240"
    text = (tmp_path / "sh600000.csv").read_text().splitlines()
    assert text[1].startswith("2024-01-02,")  # a date, no time of day


def test_incremental_fetches_grow_history_and_never_lose_older_bars(sina, tmp_path, capsys, caplog):
    folder = tmp_path / "bars"
    sina.window["sh600519"] = (0, 120)
    sina.bars["sh600519"][119] = dict(sina.bars["sh600519"][119], close="99.000", high="99.000")
    assert download(sina, folder) == 0  # bar 119 fetched unfinished (a wrong close)
    capsys.readouterr()
    sina.bars["sh600519"][119] = sina_bar(sina.bars["sh600519"][119]["day"], 119)
    sina.window["sh600519"] = (60, 200)  # the service dropped bars 0..59, added 120..199
    assert download(sina, folder) == 0
    out = capsys.readouterr()
    frame = stored(folder, "sh600519")
    expected = pd.to_datetime([b["day"] for b in sina.bars["sh600519"][:200]])
    assert list(frame["timestamps"]) == list(expected)  # 0..59 kept, no duplicates, sorted
    assert frame["close"].iloc[119] == float(sina.bars["sh600519"][119]["close"])  # newest won
    assert "80 new, 59 already stored, 1 replaced" in out.out
    assert "1 stored bar(s) replaced by the service's newer values" in caplog.text


def test_a_fetch_with_nothing_new_leaves_the_file_byte_identical(sina, tmp_path):
    sina.window["sh600519"] = (0, 50)
    assert download(sina, tmp_path) == 0
    before = snapshot(tmp_path)
    sina.window["sh600519"] = (10, 50)  # overlap only: every bar a duplicate
    assert download(sina, tmp_path) == 0
    _assert_untouched(before, snapshot(tmp_path))


@pytest.mark.parametrize("status", [429, 456, 503])
def test_throttling_is_retried_with_backoff(sina, tmp_path, status):
    sina.server.faults = [(status, "slow down"), (status, "slow down")]
    assert download(sina, tmp_path, "--fetch_backoff=0.1") == 0
    stamps = [t for t, _, _ in sina.server.requests]
    assert len(stamps) == 3
    assert stamps[1] - stamps[0] >= 0.09 and stamps[2] - stamps[1] >= 0.19  # 0.1, then 0.2
    assert len(stored(tmp_path, "sh600519")) == len(sina.bars["sh600519"])


def test_a_longer_retry_after_of_the_service_is_honoured(sina, tmp_path):
    sina.server.faults = [(429, "slow down", {"Retry-After": "0.4"})]
    assert download(sina, tmp_path, "--fetch_backoff=0.01") == 0
    first, second = (t for t, _, _ in sina.server.requests)
    assert second - first >= 0.39


def test_a_server_error_is_retried(sina, tmp_path):
    sina.server.faults = [(500, "Internal Server Error")]
    assert download(sina, tmp_path) == 0
    assert len(sina.server.requests) == 2


def test_persistent_server_errors_are_one_line_and_touch_nothing(sina, tmp_path, capsys):
    sina.window["sh600519"] = (0, 40)
    assert download(sina, tmp_path) == 0
    before = snapshot(tmp_path)
    capsys.readouterr()
    sina.window["sh600519"] = (0, 80)
    sina.server.faults = [(500, "oops")] * 10
    assert download(sina, tmp_path, "--fetch_retries=2") == EXIT_USAGE
    line = one_error_line(capsys)
    assert "sina: sh600519" in line and "HTTP 500" in line and "3 attempt(s)" in line
    assert len(sina.server.requests) == 1 + 3
    _assert_untouched(before, snapshot(tmp_path))


@pytest.mark.parametrize(
    "body, words",
    [
        ("<html><body>blocked</body></html>", "not K-line JSONP"),
        (PREFIX + '=([{"day": "2024-06-18 09:35:00", "open": );', "not K-line JSONP"),
        (PREFIX + '=({"error": "bad"});', "not a list of bars"),
        ("BAR_NOT_A_NUMBER", "open 'abc' is not a number"),
        ("BAR_BAD_DAY", "'day' is not a date/time"),
    ],
)
def test_malformed_answers_are_one_line_and_touch_nothing(sina, tmp_path, capsys, body, words):
    sina.window["sh600519"] = (0, 30)
    assert download(sina, tmp_path, symbols="sh600519,sz000001") == 0
    before = snapshot(tmp_path)
    capsys.readouterr()
    bars = sina.bars["sz000001"][:40]
    if body == "BAR_NOT_A_NUMBER":
        body = jsonp([*bars[:3], dict(bars[3], open="abc"), *bars[4:]])
    elif body == "BAR_BAD_DAY":
        body = jsonp([*bars[:3], dict(bars[3], day="not a day"), *bars[4:]])
    sina.server.faults = [(200, jsonp(sina.bars["sh600519"][:60])), (200, body)]
    assert download(sina, tmp_path, symbols="sh600519,sz000001") == EXIT_USAGE
    line = one_error_line(capsys)
    assert "sina: sz000001" in line and words in line, line
    _assert_untouched(before, snapshot(tmp_path))  # sh600519's new bars were not stored either


@pytest.mark.parametrize("answer, said", [("null", "null"), ("[]", "an empty list")])
def test_an_unknown_symbol_or_empty_answer_names_the_symbol(sina, tmp_path, capsys, answer, said):
    sina.server.faults = [(200, f"{PREFIX}=({answer});")]
    assert download(sina, tmp_path, symbols="sh688888") == EXIT_USAGE
    line = one_error_line(capsys)
    assert "sh688888" in line and f"answered {said}" in line
    assert not any(tmp_path.iterdir())


def test_offline_is_one_line_naming_the_symbol(tmp_path, capsys):
    closed = Loopback(lambda path, query: (200, ""))
    url = closed.url + PATH
    closed.close()  # nothing listens on that port any more
    args = ["--source=sina", f"--sina_url={url}", f"--data_path={tmp_path / 'bars'}", *FAST]
    assert download_main([*args, "--instruments=sz000001", "--fetch_retries=1"]) == EXIT_USAGE
    line = one_error_line(capsys)
    assert "freq: a sina fetch asks for one bar length" in line  # freq: auto cannot be asked
    argv = [*args, "--instruments=sz000001", "--fetch_retries=1", "--freq=day"]
    assert download_main(argv) == EXIT_USAGE
    line = one_error_line(capsys)
    assert "sina: sz000001" in line and "no answer from" in line and "2 attempt(s)" in line
    assert not (tmp_path / "bars").exists()


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--instruments=600519"], "instruments: '600519' is not a Sina symbol"),
        (["--instruments=all"], "needs the symbols to fetch"),
        (["--instruments=sh600519", "--freq=1min"], "freq: '1min' is not a bar length Sina"),
        (["--instruments=sh600519", "--fetch_retries=-1"], "fetch_retries: must be >= 0"),
        (["--instruments=sh600519", "--sina_url=ftp://x"], "sina_url: 'ftp://x' is not"),
    ],
)
def test_mistakes_are_caught_before_any_request(sina, tmp_path, capsys, flags, words):
    args = ["--source=sina", f"--data_path={tmp_path}", *FAST, *flags]
    if not any(f.startswith("--sina_url") for f in flags):
        args.append(f"--sina_url={sina.url}")
    assert download_main(args) == EXIT_USAGE
    assert words in one_error_line(capsys)
    assert sina.server.requests == []


def test_requests_keep_the_polite_interval(sina, tmp_path):
    assert download(sina, tmp_path, "--fetch_interval=0.3", symbols="sh600519,sz000001") == 0
    first, second = (t for t, _, _ in sina.server.requests)
    assert second - first >= 0.29


def test_a_kill_during_a_fetch_leaves_every_stored_file_intact(sina, tmp_path):
    sina.window = {"sh600519": (0, 60), "sz000001": (0, 60)}
    both = "sh600519,sz000001"
    assert download(sina, tmp_path, symbols=both) == 0
    before = snapshot(tmp_path)
    sina.window = {"sh600519": (0, 200), "sz000001": (0, 200)}
    sina.server.faults = [None, 60.0]  # sh600519 answers, sz000001's answer stalls
    args = ["--source=sina", f"--sina_url={sina.url}", f"--data_path={tmp_path}"]
    kill_download_midway(sina.server, 4, [*args, f"--instruments={both}", "--freq=5min", *FAST])
    _assert_untouched(before, snapshot(tmp_path))


def test_fetch_then_train_reads_the_folder_like_csv(sina, tmp_path):
    folder = tmp_path / "bars"
    assert download(sina, folder, symbols="sh600519,sz000001") == 0
    frames = load_frames({"data_source": "sina", "data_path": str(folder), "freq": "5min"})
    assert sorted(frames) == ["sh600519", "sz000001"]
    assert len(frames["sh600519"]) == len(sina.bars["sh600519"])
    cfg = tiny_cfg(
        tmp_path, data_source="sina", data_path=str(folder), instruments="sh600519,sz000001",
        freq="5min", max_steps=2, epochs=1,
    )  # fmt: skip
    ctx = run(cfg)
    assert ctx.global_step == 2


def test_pipeline_fetches_first_and_skip_data_process_reuses_the_folder(sina, tmp_path, capsys):
    folder = tmp_path / "bars"
    common = [
        "--data_source=sina", f"--sina_url={sina.url}", f"--data_path={folder}",
        "--instruments=sh600519", "--freq=5min", *FAST, "--model_preset=tiny",
        "--lookback_window=20", "--predict_window=4", "--batch_size=8", "--max_steps=2",
        "--epochs=1", "--progress_bar=false", "--skip-predictor",
    ]  # fmt: skip
    code = pipeline_main([*common, f"--exp_dir={tmp_path / 'exp1'}"])
    assert code == 0, capsys.readouterr().err
    assert len(sina.server.requests) == 1
    assert len(stored(folder, "sh600519")) == len(sina.bars["sh600519"])
    before = snapshot(folder)
    sina.server.close()  # a fetch now would fail: --skip-data-process must not fetch
    code = pipeline_main([*common, f"--exp_dir={tmp_path / 'exp2'}", "--skip-data-process"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "exp2" / "tokenizer" / "best").is_dir()
    _assert_untouched(before, snapshot(folder))


def test_training_on_a_folder_never_fetched_says_how_to_fetch(tmp_path, capsys):
    missing = tmp_path / "nothing"
    flags = ["--data_source=sina", f"--data_path={missing}", "--instruments=sh600519"]
    code = pipeline_main(
        [*flags, "--freq=5min", f"--exp_dir={tmp_path / 'e'}", "--skip-data-process"]
    )
    assert code == EXIT_USAGE
    assert "scripts/download.py --source sina" in one_error_line(capsys)
