"""`data_source: ccxt`: OHLCV bars of any exchange ccxt supports (the optional ``ccxt`` extra).

Bars come from ccxt's ``fetch_ohlcv(symbol, timeframe, since, limit)``, paged forward from
``since`` until the current bar: from the last stored bar when the folder already holds the
symbol (so that bar, perhaps unfinished when stored, is fetched again), else from
``fetch_since``, else only the exchange's most recent page. Times are UTC, as ccxt gives them.
Volume is the base-currency volume; there is no amount (it is derived, as for any CSV without
one). Network failures, throttling and exchange outages are retried with back-off; an unknown
symbol or a malformed answer is one line.

``exchange_api_url`` points every API URL of the exchange at another host (a mirror, a proxy,
or the tests' loopback server): ``https://api.binance.com/api/v3`` becomes
``<exchange_api_url>/api/v3``.
"""

from __future__ import annotations

import difflib
import logging
import math
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import pandas as pd

from kronos_engine.data.market_http import FetchPolicy, Pacer
from kronos_engine.data.market_store import bars_frame
from kronos_engine.data.schema import parse_freq
from kronos_engine.errors import DataError
from kronos_engine.extras import require

log = logging.getLogger("kronos_engine.data")
PAGE_LIMIT = 1000  # bars asked per request (binance's maximum; others answer fewer)


def ccxt_symbols(instruments: str) -> list[str]:
    """``instruments`` as ccxt unified symbols (``BTC/USDT``, ``ETH/USDT:USDT``)."""
    names = list(dict.fromkeys(s.strip() for s in str(instruments).split(",") if s.strip()))
    if not names or [n.lower() for n in names] == ["all"]:
        raise DataError(
            "instruments: data_source 'ccxt' needs the symbols to fetch, comma-separated, such "
            "as BTC/USDT,ETH/USDT"
        )
    bad = [n for n in names if "/" not in n]
    if bad:
        raise DataError(
            f"instruments: '{bad[0]}' is not a ccxt symbol; use the unified BASE/QUOTE form, "
            f"e.g. BTC/USDT"
        )
    return names


def ccxt_timeframe(freq: str) -> str:
    """``freq`` as a ccxt timeframe: ``5min`` -> ``5m``, ``60min`` -> ``1h``, ``day`` -> ``1d``."""
    parsed = parse_freq(freq)
    if parsed.minutes is None:
        return "1d"
    if parsed.minutes % 60 == 0:
        return f"{parsed.minutes // 60}h"
    return f"{parsed.minutes}m"


def parse_since(text: str | None) -> pd.Timestamp | None:
    """``fetch_since`` as a UTC time without zone (ccxt's times are UTC)."""
    if not text:
        return None
    try:
        start = pd.Timestamp(text)
    except (TypeError, ValueError):
        start = pd.NaT
    if pd.isna(start):
        raise DataError(f"fetch_since: '{text}' is not a date/time such as 2024-01-01")
    return start.tz_convert("UTC").tz_localize(None) if start.tzinfo else start


def _rewrite(urls: Any, base: str) -> Any:
    """Every URL in ``urls`` (nested dicts/lists of strings) moved to ``base``'s host."""
    if isinstance(urls, dict):
        return {key: _rewrite(value, base) for key, value in urls.items()}
    if isinstance(urls, list):
        return [_rewrite(value, base) for value in urls]
    if isinstance(urls, str) and urls.startswith(("http://", "https://")):
        path = urllib.parse.urlsplit(urls.replace("{hostname}", "host")).path
        return base.rstrip("/") + path
    return urls


def make_exchange(spec: Any, policy: FetchPolicy) -> Any:
    """The configured ccxt exchange, checked: it exists, serves OHLCV and the timeframe."""
    ccxt = require("ccxt", "data_source", "ccxt")
    name = str(spec.exchange or "").strip().lower()
    if not name:
        raise DataError("exchange: required when data_source is 'ccxt' (e.g. binance, okx)")
    if name not in ccxt.exchanges:
        close = difflib.get_close_matches(name, ccxt.exchanges, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see ccxt.exchanges"
        raise DataError(f"exchange: '{spec.exchange}' is not an exchange ccxt knows; {hint}")
    exchange = getattr(ccxt, name)(
        {
            "enableRateLimit": True,  # ccxt's own pacing per exchange, on top of fetch_interval
            "timeout": int(policy.timeout * 1e3),
            "enableLastHttpResponse": True,  # to tell a non-JSON answer from an empty one
            "enableLastJsonResponse": True,
        }
    )
    if spec.exchange_api_url:
        if not str(spec.exchange_api_url).startswith(("http://", "https://")):
            raise DataError(f"exchange_api_url: '{spec.exchange_api_url}' is not an http(s) URL")
        exchange.urls["api"] = _rewrite(exchange.urls["api"], str(spec.exchange_api_url))
    if not exchange.has.get("fetchOHLCV"):
        raise DataError(f"exchange: {name} does not serve OHLCV bars through ccxt")
    timeframe = ccxt_timeframe(spec.freq)
    if exchange.timeframes and timeframe not in exchange.timeframes:
        raise DataError(
            f"freq: '{spec.freq}' ({timeframe}) is not a bar length {name} serves; its "
            f"timeframes: {', '.join(exchange.timeframes)}"
        )
    return exchange


def _call(ccxt: Any, what: str, policy: FetchPolicy, pacer: Pacer, fn: Callable[[], Any]) -> Any:
    """``fn()`` with back-off retries on ccxt's network errors (timeouts, throttling, 5xx)."""
    last = "no answer"
    for attempt in range(policy.retries + 1):
        if attempt:
            delay = policy.wait(attempt)
            log.warning(
                "%s: %s; retry %d of %d in %.1fs", what, last, attempt, policy.retries, delay
            )
            time.sleep(delay)
        pacer()
        try:
            return fn()
        except ccxt.BadSymbol as exc:
            raise DataError(f"{what}: unknown symbol ({_one_line(exc)})") from None
        except ccxt.NetworkError as exc:  # RequestTimeout, DDoSProtection, ExchangeNotAvailable
            last = f"{type(exc).__name__}: {_one_line(exc)}"
        except ccxt.BaseError as exc:
            raise DataError(f"{what}: the exchange refused ({_one_line(exc)})") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise DataError(f"{what}: malformed answer from the exchange ({exc!r})") from None
    raise DataError(f"{what}: {last}, after {policy.retries + 1} attempt(s); nothing was stored")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def _bar(candle: Any, what: str) -> dict[str, Any]:
    if not isinstance(candle, (list, tuple)) or len(candle) < 6:
        raise DataError(f"{what}: malformed bar {candle!r} (expected [time, o, h, l, c, v])")
    stamp = candle[0]
    if not isinstance(stamp, (int, float)) or isinstance(stamp, bool) or not math.isfinite(stamp):
        raise DataError(f"{what}: bar {candle!r}: the time is not a number; nothing was stored")
    row: dict[str, Any] = {"timestamps": pd.Timestamp(int(stamp), unit="ms")}
    for name, value in zip(("open", "high", "low", "close", "volume"), candle[1:6]):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value):
            raise DataError(
                f"{what}: bar at {row['timestamps']}: {name} {value!r} is not a number; "
                f"nothing was stored"
            )
        row[name] = float(value)
    return row


def fetch_symbol(
    exchange: Any,
    symbol: str,
    timeframe: str,
    since_ms: int | None,
    policy: FetchPolicy,
    pacer: Pacer,
    stored: bool = False,
) -> list[dict[str, Any]]:
    """One symbol's bars from ``since_ms`` (None: the most recent page) until now; no bars
    is an error unless the folder already holds the symbol (``stored``: nothing new)."""
    import ccxt

    what = f"ccxt {exchange.id}: {symbol}"
    step = exchange.parse_timeframe(timeframe) * 1000
    now = exchange.milliseconds()
    rows: list[dict[str, Any]] = []
    since = since_ms
    while True:
        page = _call(
            ccxt, what, policy, pacer,
            lambda since=since: exchange.fetch_ohlcv(symbol, timeframe, since, PAGE_LIMIT),
        )  # fmt: skip
        if not isinstance(page, list):
            raise DataError(f"{what}: malformed answer from the exchange ({page!r:.80})")
        if not page:
            _check_empty(exchange, what)
        fresh = [_bar(c, what) for c in page]
        if since is not None:
            fresh = [r for r in fresh if r["timestamps"].value // 1_000_000 >= since]
        if not fresh:
            break
        rows.extend(fresh)
        last = fresh[-1]["timestamps"].value // 1_000_000
        if last + step > now or (since is not None and last < since):
            break
        since = last + 1
    if not rows and not stored:
        since_text = "" if since_ms is None else f" since {pd.Timestamp(since_ms, unit='ms')}"
        raise DataError(
            f"{what}: the exchange answered no bars{since_text} (an empty list); check the "
            f"symbol, freq and fetch_since; nothing was stored"
        )
    return rows


def _check_empty(exchange: Any, what: str) -> None:
    """ccxt reads an answer that is not JSON (an HTML error page) as no bars: say so."""
    if exchange.last_json_response is not None:
        return
    text = str(exchange.last_http_response or "").strip()
    if text not in ("", "null", "[]"):
        flat = " ".join(text.split())
        raise DataError(f"{what}: the exchange's answer is not JSON ({flat[:60]!r})")


def fetch_ccxt(spec: Any, since_of: Callable[[str], pd.Timestamp | None]) -> dict[str, Any]:
    """Every configured symbol's bars (`bars_frame`): from the last stored bar (``since_of``)
    or ``fetch_since``; the first failure stops the fetch before anything is stored."""
    symbols = ccxt_symbols(spec.instruments)
    start = parse_since(spec.fetch_since)
    policy = FetchPolicy.from_spec(spec)
    pacer = Pacer(policy.interval)
    exchange = make_exchange(spec, policy)
    timeframe = ccxt_timeframe(spec.freq)
    import ccxt

    _call(ccxt, f"ccxt {exchange.id}: markets", policy, pacer, exchange.load_markets)
    for symbol in symbols:
        if symbol not in exchange.markets:
            close = difflib.get_close_matches(symbol, list(exchange.markets), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise DataError(
                f"ccxt {exchange.id}: {symbol}: unknown symbol (the exchange lists "
                f"{len(exchange.markets)} markets){hint}"
            )
    frames = {}
    for symbol in symbols:
        stored = since_of(symbol)
        first = stored if stored is not None else start
        since_ms = None if first is None else int(first.value // 1_000_000)
        rows = fetch_symbol(
            exchange, symbol, timeframe, since_ms, policy, pacer, stored is not None
        )
        frames[symbol] = bars_frame(rows)
    return frames
