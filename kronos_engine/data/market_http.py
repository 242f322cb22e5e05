"""Polite HTTP for the market sources: a minimum interval between requests, timeouts, and
retries with exponential back-off on throttling (429/456/503), other server errors (5xx) and
dropped connections. Standard library only (urllib): fetching adds no dependency.

A request that still fails after the retries, or that the service refuses outright (404, 403),
is one `DataError` line naming the symbol and what the service said.
"""

from __future__ import annotations

import http.client
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from kronos_engine.errors import DataError

log = logging.getLogger("kronos_engine.data")

THROTTLED = (429, 456, 503)  # 456 is Sina's "too many requests from this address"
USER_AGENT = "Mozilla/5.0 (compatible; kronos-engine market fetch)"
MAX_RETRY_AFTER_S = 60.0


@dataclass(frozen=True)
class FetchPolicy:
    """How a source asks: the config's ``fetch_*`` keys."""

    timeout: float = 15.0  # seconds per request
    retries: int = 5  # extra attempts after the first
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    interval: float = 0.5  # seconds at least between two requests

    @classmethod
    def from_spec(cls, spec: Any) -> FetchPolicy:
        return cls(spec.fetch_timeout, spec.fetch_retries, spec.fetch_backoff, spec.fetch_interval)

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retry number ``attempt`` (1-based): the back-off, or the service's
        own Retry-After when it asks for longer (capped at a minute)."""
        delay = self.backoff * (2 ** (attempt - 1))
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
        return delay


class Pacer:
    """Keeps at least ``interval`` seconds between the starts of two requests."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: float | None = None

    def __call__(self) -> None:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval:
            time.sleep(self.interval - (now - self._last))
        self._last = time.monotonic()


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def http_get(url: str, policy: FetchPolicy, pacer: Pacer, what: str) -> str:
    """The body of ``url`` as text. ``what`` names the request in messages ("sina: sh600000")."""
    last = "no answer"
    retry_after: float | None = None  # the service's Retry-After of the last answer
    for attempt in range(policy.retries + 1):
        if attempt:
            delay = policy.wait(attempt, retry_after)
            log.warning(
                "%s: %s; retry %d of %d in %.1fs", what, last, attempt, policy.retries, delay
            )
            time.sleep(delay)
            retry_after = None
        pacer()
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=policy.timeout) as answer:  # noqa: S310
                return answer.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as exc:
            last = f"the service answered HTTP {exc.code} {exc.reason}"
            if exc.code not in THROTTLED and exc.code < 500:
                raise DataError(f"{what}: {last} for {url}") from None
            retry_after = _retry_after(exc.headers)
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
            reason = getattr(exc, "reason", exc)
            last = f"no answer from {url} ({' '.join(str(reason).split()) or type(exc).__name__})"
    raise DataError(f"{what}: {last}, after {policy.retries + 1} attempt(s); nothing was stored")
