"""What every API backend needs around its SDK calls: a client-side rate limiter, error
classification and retry delays. Pure logic, no SDK imports, so it is tested directly."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

# error class -> retryable?
ERROR_CLASSES = {
    "rate_limit": True,  # 429
    "server": True,  # 5xx
    "timeout": True,
    "connection": True,  # reset, refused, DNS
    "malformed": True,  # unparseable body, empty choices: a flaky proxy, worth a retry
    "bad_request": False,  # 400, 404, 422: the request itself is wrong
    "auth": False,  # 401, 403
    "content_filter": False,  # the provider refused the content
}


def class_of_status(status: int) -> str:
    if status == 429:
        return "rate_limit"
    if status >= 500:
        return "server"
    if status in (401, 403):
        return "auth"
    return "bad_request"


def retry_delay(attempt: int, retry_after: float | None, base: float = 0.5, cap: float = 60.0,
                rng: random.Random | None = None) -> float:  # fmt: skip
    """Seconds to wait before retry number `attempt` (0-based): the server's Retry-After
    when it sent one (plus a little jitter so clients do not return in lockstep), else
    exponential backoff with full jitter."""
    r = rng or random
    if retry_after is not None and retry_after >= 0:
        return min(cap, retry_after) + r.uniform(0, 0.1 * base)
    return r.uniform(0, min(cap, base * 2**attempt))


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is rare from APIs and is ignored)."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@dataclass
class RateLimiter:
    """Client-side pacing for requests/minute and tokens/minute.

    Requests are spaced evenly (a leaky bucket) rather than sent in bursts up to the
    limit: a provider counting over any sliding window then never sees more than the
    limit, so the client itself causes no 429s, and the achieved rate still approaches
    the limit. `tokens` is the caller's estimate of what a request will consume."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    # Pace a little under the limit: a request that wakes late sends its successor
    # closer behind it, and the provider's clock is not ours.
    headroom: float = 0.98

    def __post_init__(self):
        self._next = 0.0
        self._lock = asyncio.Lock()

    def _cost(self, tokens: int) -> float:
        gaps = [0.0]
        if self.requests_per_minute:
            gaps.append(60.0 / (self.requests_per_minute * self.headroom))
        if self.tokens_per_minute:
            gaps.append(60.0 * tokens / (self.tokens_per_minute * self.headroom))
        return max(gaps)

    async def acquire(self, tokens: int = 0) -> None:
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._cost(tokens)
        if start > now:
            await asyncio.sleep(start - now)

    async def penalize(self, seconds: float) -> None:
        """After a 429, hold every request back, not only the one that was refused."""
        async with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)
