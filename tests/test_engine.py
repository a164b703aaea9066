import asyncio
import random
import time

from protege.backends.engine import (
    ERROR_CLASSES,
    RateLimiter,
    class_of_status,
    parse_retry_after,
    retry_delay,
)


def test_status_classes():
    assert [class_of_status(s) for s in (429, 500, 503, 401, 403, 400, 404)] == [
        "rate_limit",
        "server",
        "server",
        "auth",
        "auth",
        "bad_request",
        "bad_request",
    ]
    assert ERROR_CLASSES["rate_limit"] and not ERROR_CLASSES["auth"]


def test_retry_delay_honours_retry_after_and_backs_off():
    rng = random.Random(0)
    assert 2.0 <= retry_delay(0, 2.0, rng=rng) <= 2.05
    assert retry_delay(0, 500.0, cap=60, rng=rng) <= 60.05
    delays = [retry_delay(a, None, base=1.0, cap=8.0, rng=rng) for a in range(10)]
    assert all(0 <= d <= min(8.0, 2**a) for a, d in enumerate(delays))
    assert parse_retry_after("1.5") == 1.5 and parse_retry_after("Wed, 21 Oct") is None


def test_limiter_paces_requests_evenly():
    async def go():
        lim = RateLimiter(requests_per_minute=1200)  # one per 50 ms
        stamps = []
        for _ in range(6):
            await lim.acquire()
            stamps.append(time.monotonic())
        return stamps

    s = asyncio.run(go())
    gaps = [b - a for a, b in zip(s, s[1:], strict=False)]
    assert all(g >= 0.045 for g in gaps), gaps
    assert s[-1] - s[0] < 0.5


def test_limiter_tokens_per_minute_and_penalty():
    async def go():
        lim = RateLimiter(tokens_per_minute=60_000)  # 1000 tokens/s
        t0 = time.monotonic()
        await lim.acquire(100)
        await lim.acquire(100)  # waits ~0.1 s for the first request's tokens
        await lim.penalize(0.2)
        await lim.acquire(1)
        return time.monotonic() - t0

    assert 0.3 <= asyncio.run(go()) < 1.0
