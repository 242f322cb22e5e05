"""`data_source: sina`: a client of Sina Finance's K-line service, the one akshare's
``stock_zh_a_minute`` uses.

Request: ``GET <sina_url>?symbol=sh600519&scale=5&ma=no&datalen=1970`` (``scale`` is the bar
length in minutes, 240 for daily bars; 1970 bars is the most the service returns). Answer:
JSONP text ``...=([{"day": "2024-06-18 09:35:00", "open": "10.100", "high": ..., "low": ...,
"close": ..., "volume": "123400"}, ...]);`` with values as strings (daily bars have ``"day":
"2024-06-18"``); an unknown symbol answers ``null`` or ``[]``. Times are China time as the
service writes them. The service has no "since" parameter: every fetch asks for the most recent
bars and the market store (`market_store`) keeps what was fetched before.
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from typing import Any

import pandas as pd

from kronos_engine.data.market_http import FetchPolicy, Pacer, http_get
from kronos_engine.data.market_store import bars_frame
from kronos_engine.data.schema import parse_freq
from kronos_engine.errors import DataError

SINA_SCALES: dict[str, int] = {"5min": 5, "15min": 15, "30min": 30, "60min": 60, "day": 240}
SINA_DATALEN = 1970
SYMBOL = re.compile(r"(sh|sz|bj)\d{6}")
_JSONP = re.compile(r"=\s*\((.*)\)\s*;?\s*$", re.S)
_FIELDS = ("open", "high", "low", "close", "volume")


def sina_symbols(instruments: str) -> list[str]:
    """``instruments`` as Sina codes (``sh600000``, ``sz000001``, ``bj430047``; any case)."""
    names = [s.strip() for s in str(instruments).split(",") if s.strip()]
    if not names or [n.lower() for n in names] == ["all"]:
        raise DataError(
            "instruments: data_source 'sina' needs the symbols to fetch, comma-separated, such "
            "as sh600000,sz000001 ('all' is not a list Sina can answer)"
        )
    bad = [n for n in names if not SYMBOL.fullmatch(n.lower())]
    if bad:
        raise DataError(
            f"instruments: '{bad[0]}' is not a Sina symbol; use the exchange prefix sh, sz or bj "
            f"and the 6-digit code, e.g. sh600000, sz000001"
        )
    return list(dict.fromkeys(n.lower() for n in names))


def sina_scale(freq: str) -> int:
    """The service's ``scale`` for the configured ``freq``."""
    try:
        name = parse_freq(freq).name
    except DataError:
        name = str(freq)
    if name not in SINA_SCALES:
        raise DataError(
            f"freq: '{freq}' is not a bar length Sina serves; choose one of "
            f"{', '.join(SINA_SCALES)}"
        )
    return SINA_SCALES[name]


def sina_request_url(base_url: str, symbol: str, scale: int) -> str:
    query = urllib.parse.urlencode(
        {"symbol": symbol, "scale": scale, "ma": "no", "datalen": SINA_DATALEN}
    )
    return f"{base_url}{'&' if '?' in base_url else '?'}{query}"


def _shown(text: str) -> str:
    flat = " ".join(text.split())
    return repr(flat[:60] + ("..." if len(flat) > 60 else ""))


def _number(bar: dict[str, Any], name: str, where: str) -> float:
    value = bar.get(name)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or isinstance(value, bool):
        raise DataError(f"{where}: {name} {value!r} is not a number; nothing was stored")
    return number


def parse_sina_answer(text: str, what: str) -> list[dict[str, Any]]:
    """The bars of one answer as dicts (``timestamps`` + floats); ``what`` names the request."""
    match = _JSONP.search(text)
    if match is None:
        raise DataError(f"{what}: the service's answer is not K-line JSONP ({_shown(text)})")
    try:
        payload = json.loads(match.group(1))
    except json.JSONDecodeError:
        raise DataError(
            f"{what}: the service's answer is not K-line JSONP ({_shown(text)})"
        ) from None
    if payload is None or payload == []:
        said = "null" if payload is None else "an empty list"
        raise DataError(
            f"{what}: the service has no bars for this symbol (it answered {said}); check the "
            f"symbol (e.g. sh600000) and freq; nothing was stored"
        )
    if not isinstance(payload, list) or not all(isinstance(bar, dict) for bar in payload):
        raise DataError(f"{what}: the service's answer is not a list of bars ({_shown(text)})")
    rows = []
    for index, bar in enumerate(payload, start=1):
        day = bar.get("day")
        where = f"{what}: bar {index} ({day})"
        try:
            stamp = pd.Timestamp(str(day))
        except (TypeError, ValueError):
            stamp = pd.NaT
        if day is None or pd.isna(stamp):
            raise DataError(f"{where}: 'day' is not a date/time; nothing was stored")
        row: dict[str, Any] = {"timestamps": stamp}
        row.update({name: _number(bar, name, where) for name in _FIELDS})
        if bar.get("amount") not in (None, ""):
            row["amount"] = _number(bar, "amount", where)
        rows.append(row)
    return rows


def fetch_sina(spec: Any) -> dict[str, pd.DataFrame]:
    """Every configured symbol's most recent bars (`bars_frame`), one request per symbol at
    the polite pace; the first failure stops the fetch before anything is stored."""
    symbols = sina_symbols(spec.instruments)
    scale = sina_scale(spec.freq)
    if not str(spec.sina_url).startswith(("http://", "https://")):
        raise DataError(f"sina_url: '{spec.sina_url}' is not an http(s) URL")
    policy = FetchPolicy.from_spec(spec)
    pacer = Pacer(policy.interval)
    frames = {}
    for symbol in symbols:
        what = f"sina: {symbol}"
        text = http_get(sina_request_url(spec.sina_url, symbol, scale), policy, pacer, what)
        frames[symbol] = bars_frame(parse_sina_answer(text, what))
    return frames
