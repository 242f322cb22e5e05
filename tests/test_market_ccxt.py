"""`data_source: ccxt` against a real HTTP server on 127.0.0.1 answering in Binance's format
(`exchangeInfo`, `/api/v3/klines` arrays), with every API URL of ccxt's binance pointed at it
through `exchange_api_url` (no test touches the internet): paging until now, incremental
fetches (the last stored bar fetched again, overlaps, older bars kept), throttling, server
errors, malformed and empty answers, an unknown symbol, a kill during a fetch, and
fetch-then-train."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
from engine_helpers import run, tiny_cfg
from market_server import Loopback, kill_download_midway
from test_faults_bad_input import EXIT_USAGE, _assert_untouched, snapshot

from kronos_engine.cli.download import main as download_main
from kronos_engine.data import load_frames

ccxt = pytest.importorskip("ccxt", reason="the ccxt extra is not installed (pip install ccxt)")

REPO = Path(__file__).resolve().parents[1]
HOUR = 3_600_000
FAST = ["--fetch_backoff=0.01", "--fetch_interval=0", "--fetch_timeout=5"]
SERVED_PER_PAGE = 300  # fewer than the 1000 asked: paging must follow the last bar's time


def market(symbol: str, base: str) -> dict:
    """One spot market of Binance's exchangeInfo, as the real answer spells it."""
    return {
        "symbol": symbol, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
        "quoteAsset": "USDT", "quotePrecision": 8, "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"], "icebergAllowed": True,
        "ocoAllowed": True, "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
        "permissions": ["SPOT"], "permissionSets": [["SPOT"]],
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000.00",
             "tickSize": "0.01"},
            {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000.00",
             "stepSize": "0.00001"},
        ],
    }  # fmt: skip


def kline(open_ms: int, i: int) -> list:
    price = 60000 + 50 * ((i * 7) % 23) + i
    o, h, low, c, v = price, price + 80, price - 70, price + 10, 1.5 + (i % 11) / 10
    return [open_ms, f"{o:.2f}", f"{h:.2f}", f"{low:.2f}", f"{c:.2f}", f"{v:.5f}",
            open_ms + HOUR - 1, f"{v * c:.4f}", 100 + i, "0.7", "42000.1", "0"]  # fmt: skip


class Binance:
    """The exchange: hourly klines per symbol ending with the current (unfinished) hour."""

    def __init__(self, hours: int = 700) -> None:
        now = int(time.time() * 1000) // HOUR * HOUR
        self.start = now - (hours - 1) * HOUR
        self.klines = {
            sym: [kline(self.start + i * HOUR, i + k) for i in range(hours)]
            for k, sym in enumerate(("BTCUSDT", "ETHUSDT"))
        }
        self.server = Loopback(self.answer)

    def answer(self, path: str, query: dict[str, str]):
        if path.endswith("/exchangeInfo"):
            symbols = [market("BTCUSDT", "BTC"), market("ETHUSDT", "ETH")]
            body = {"timezone": "UTC", "serverTime": int(time.time() * 1000), "rateLimits": [],
                    "exchangeFilters": [], "symbols": symbols if path == "/api/v3/exchangeInfo"
                    else []}  # fmt: skip
            return 200, json.dumps(body), {"Content-Type": "application/json"}
        if path != "/api/v3/klines":
            return 404, json.dumps({"code": -1, "msg": "not found"})
        bars = self.klines[query["symbol"]]
        limit = min(int(query.get("limit", 500)), SERVED_PER_PAGE)
        if "startTime" in query:
            page = [b for b in bars if b[0] >= int(query["startTime"])][:limit]
        else:
            page = bars[-limit:]
        return 200, json.dumps(page), {"Content-Type": "application/json"}

    def kline_requests(self) -> list[dict[str, str]]:
        return [q for _, path, q in self.server.requests if path == "/api/v3/klines"]


@pytest.fixture
def binance():
    exchange = Binance()
    yield exchange
    exchange.server.close()


def download(binance: Binance, folder: Path, *extra: str, symbols: str = "BTC/USDT") -> int:
    args = ["--source=ccxt", "--exchange=binance", f"--exchange_api_url={binance.server.url}"]
    args += [f"--data_path={folder}", f"--instruments={symbols}", "--freq=1h", *FAST]
    return download_main([*args, *extra])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def stored(folder: Path, name: str = "BTC_USDT") -> pd.DataFrame:
    return pd.read_csv(folder / f"{name}.csv", parse_dates=["timestamps"])


def since(binance: Binance, index: int) -> str:
    return f"--fetch_since={pd.Timestamp(binance.start + index * HOUR, unit='ms')}"


def test_pages_until_now_into_a_safe_file_name_with_the_symbol_kept(binance, tmp_path):
    assert download(binance, tmp_path, since(binance, 0)) == 0
    requests = binance.kline_requests()
    assert len(requests) == 3  # 700 bars at 300 a page
    assert all(q["interval"] == "1h" and q["symbol"] == "BTCUSDT" for q in requests)
    assert requests[0]["startTime"] == str(binance.start)
    frame = stored(tmp_path)
    assert list(frame.columns) == ["timestamps", "open", "high", "low", "close", "volume", "symbol"]
    assert set(frame["symbol"]) == {"BTC/USDT"}
    assert len(frame) == 700 and frame["timestamps"].is_monotonic_increasing
    first = binance.klines["BTCUSDT"][0]
    assert frame["timestamps"].iloc[0] == pd.Timestamp(first[0], unit="ms")  # UTC
    assert frame["close"].iloc[0] == float(first[4]) and frame["volume"].iloc[0] == float(first[5])


def test_without_fetch_since_a_first_fetch_takes_the_latest_page(binance, tmp_path):
    assert download(binance, tmp_path) == 0
    assert "startTime" not in binance.kline_requests()[0]
    assert len(stored(tmp_path)) == SERVED_PER_PAGE


def test_incremental_fetches_refetch_the_last_bar_and_never_lose_older_ones(
    binance, tmp_path, capsys
):
    bars = binance.klines["BTCUSDT"]
    full = list(bars)
    binance.klines["BTCUSDT"] = bars[:400]
    binance.klines["BTCUSDT"][-1] = [*bars[399][:4], "1.00", *bars[399][5:]]  # unfinished close
    assert download(binance, tmp_path, since(binance, 0)) == 0
    capsys.readouterr()
    binance.klines["BTCUSDT"] = full[300:]  # older bars gone from the exchange, newer ones added
    assert download(binance, tmp_path, since(binance, 0)) == 0
    assert binance.kline_requests()[-2]["startTime"] == str(full[399][0])  # from the last bar
    frame = stored(tmp_path)
    assert list(frame["timestamps"]) == [pd.Timestamp(b[0], unit="ms") for b in full]
    assert frame["close"].iloc[399] == float(full[399][4])  # the finished bar replaced it
    assert "300 new, 0 already stored, 1 replaced" in capsys.readouterr().out


def test_nothing_new_leaves_the_file_byte_identical(binance, tmp_path):
    assert download(binance, tmp_path, since(binance, 0)) == 0
    before = snapshot(tmp_path)
    assert download(binance, tmp_path) == 0
    _assert_untouched(before, snapshot(tmp_path))


@pytest.mark.parametrize("status", [429, 418, 500, 503])
def test_throttling_and_server_errors_are_retried(binance, tmp_path, status):
    binance.server.faults = [None, None, None, (status, '{"code":-1003,"msg":"Too many"}')]
    assert download(binance, tmp_path) == 0  # markets fine, klines fail once, then answer
    assert len(binance.kline_requests()) == 2
    assert len(stored(tmp_path)) == SERVED_PER_PAGE


def test_persistent_server_errors_are_one_line_and_touch_nothing(binance, tmp_path, capsys):
    assert download(binance, tmp_path) == 0
    before = snapshot(tmp_path)
    capsys.readouterr()
    binance.server.faults = [None, None, None] + [(500, "Internal Server Error")] * 10
    assert download(binance, tmp_path, "--fetch_retries=2") == EXIT_USAGE
    line = one_error_line(capsys)
    assert "ccxt binance" in line and "3 attempt(s)" in line, line
    _assert_untouched(before, snapshot(tmp_path))


@pytest.mark.parametrize(
    "body, words",
    [
        ("<html><body>504 Gateway Time-out</body></html>", "answer is not JSON"),
        ("OPEN_NOT_A_NUMBER", "open None is not a number"),
        ("NO_VOLUME", "volume None is not a number"),
    ],
)
def test_malformed_answers_are_one_line_and_touch_nothing(binance, tmp_path, capsys, body, words):
    assert download(binance, tmp_path, symbols="BTC/USDT,ETH/USDT") == 0
    before = snapshot(tmp_path)
    capsys.readouterr()
    last = binance.klines["BTCUSDT"][-1]  # the page from the last stored bar: it again, broken
    if body == "OPEN_NOT_A_NUMBER":
        body = json.dumps([[last[0], "abc", *last[2:]]])
    elif body == "NO_VOLUME":
        body = json.dumps([last[:5]])
    binance.server.faults = [None, None, None, (200, body)]  # 3 x exchangeInfo, BTC's page
    assert download(binance, tmp_path, symbols="BTC/USDT,ETH/USDT") == EXIT_USAGE
    line = one_error_line(capsys)
    assert "BTC/USDT" in line and words in line, line
    _assert_untouched(before, snapshot(tmp_path))


def test_an_empty_answer_for_a_new_symbol_is_one_line(binance, tmp_path, capsys):
    binance.server.faults = [None, None, None, (200, "[]")]
    assert download(binance, tmp_path) == EXIT_USAGE
    assert "answered no bars (an empty list)" in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_symbol_is_one_line_before_any_bar_is_fetched(binance, tmp_path, capsys):
    assert download(binance, tmp_path, symbols="BTC/USDT,DOGE/USDT") == EXIT_USAGE
    line = one_error_line(capsys)
    assert "DOGE/USDT: unknown symbol" in line
    assert binance.kline_requests() == []


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--instruments=BTCUSDT"], "not a ccxt symbol; use the unified BASE/QUOTE form"),
        (["--exchange=binanse"], "did you mean binance"),
        (["--freq=7min"], "freq: '7min' (7m) is not a bar length binance serves"),
        (["--fetch_since=yesterday-ish"], "fetch_since: 'yesterday-ish' is not a date/time"),
    ],
)
def test_mistakes_are_one_line_before_any_request(binance, tmp_path, capsys, flags, words):
    assert download(binance, tmp_path, *flags) == EXIT_USAGE
    assert words in one_error_line(capsys)
    assert binance.server.requests == []


def test_ccxt_needs_an_exchange(tmp_path, capsys):
    args = ["--source=ccxt", f"--data_path={tmp_path}", "--instruments=BTC/USDT"]
    assert download_main(args) == EXIT_USAGE
    assert "exchange: required when data_source is 'ccxt'" in one_error_line(capsys)


def test_a_kill_during_paging_leaves_every_stored_file_intact(binance, tmp_path):
    assert download(binance, tmp_path, since(binance, 0), symbols="BTC/USDT,ETH/USDT") == 0
    before = snapshot(tmp_path)
    binance.server.faults = [None, None, None, None, 60.0]  # BTC's 1st page, then a stall
    binance.server.requests.clear()
    args = ["--source=ccxt", "--exchange=binance", f"--exchange_api_url={binance.server.url}"]
    args += [f"--data_path={tmp_path}", "--instruments=BTC/USDT,ETH/USDT", "--freq=1h"]
    kill_download_midway(binance.server, 5, [*args, since(binance, 0), *FAST])
    _assert_untouched(before, snapshot(tmp_path))


def test_fetch_then_train_reads_the_folder_like_csv(binance, tmp_path):
    folder = tmp_path / "crypto"
    assert download(binance, folder, since(binance, 0), symbols="BTC/USDT,ETH/USDT") == 0
    keys = {"data_source": "ccxt", "exchange": "binance", "data_path": str(folder), "freq": "1h"}
    frames = load_frames(keys)
    assert sorted(frames) == ["BTC/USDT", "ETH/USDT"]
    assert len(frames["ETH/USDT"]) == 700
    cfg = tiny_cfg(
        tmp_path, instruments="BTC/USDT,ETH/USDT", max_steps=2, epochs=1, **keys
    )  # fmt: skip
    assert run(cfg).global_step == 2
