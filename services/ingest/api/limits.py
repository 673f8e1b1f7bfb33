"""Per-process limits on browser posts: a token bucket per (source, address), and failed authentications."""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict

from fastapi import Request

from common.web import client_address
from ingest.settings import IngestSettings


class RateLimiter:
    """A token bucket per (source, client address) for browser posts on publishable keys, in this process."""

    def __init__(self, per_minute: int, max_addresses: int) -> None:
        self.per_minute = per_minute
        self.max_addresses = max_addresses
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    def wait(self, key: tuple[str, str], now: float | None = None) -> float:
        """0 when the request may go ahead (and is counted), else the seconds until it may."""
        now = time.monotonic() if now is None else now
        rate = self.per_minute / 60.0
        tokens, last = self._buckets.pop(key, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - last) * rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_addresses:
            # The least recently seen address goes first; at worst it gets a fresh bucket later.
            self._buckets.popitem(last=False)
        return 0.0 if allowed else (1.0 - tokens) / rate


class AuthFailureLimiter:
    """Failed authentications per client address in fixed windows, in this process.

    After `limit` failures within a window the address is refused until the window ends: guessing keys gets slow,
    and a refused guess costs no body parsing and no key look-up.
    """

    def __init__(self, limit: int, window_s: float, max_addresses: int) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()

    @property
    def counting(self) -> bool:
        """Whether any address has failures on record (when none has, no request needs its address worked out)."""
        return bool(self._windows)

    def retry_after(self, address: str, now: float | None = None) -> float:
        """0 when the address may try, else the seconds until its window ends."""
        now = time.monotonic() if now is None else now
        key = _address_group(address)
        entry = self._windows.get(key)
        if entry is None:
            return 0.0
        started, failures = entry
        left = started + self.window_s - now
        if left <= 0:
            del self._windows[key]  # its window is over: the next failure starts a new one anyway
            return 0.0
        return left if failures >= self.limit else 0.0

    def failed(self, address: str, now: float | None = None) -> None:
        """Count one failure against the address."""
        now = time.monotonic() if now is None else now
        key = _address_group(address)
        started, failures = self._windows.pop(key, (now, 0))
        if now - started >= self.window_s:
            started, failures = now, 0
        self._windows[key] = (started, failures + 1)
        while len(self._windows) > self.max_addresses:
            self._windows.popitem(last=False)  # the least recently failing address first


def _address_group(address: str) -> str:
    """IPv6 clients count by /64, the block one subscriber gets: walking through it does not reset the count."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def caller_address(request: Request) -> str:
    """The client's address, through the trusted proxies."""
    settings: IngestSettings = request.app.state.settings
    return client_address(request, settings.trusted_proxies)
