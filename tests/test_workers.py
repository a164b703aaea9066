import os
import time

from protege.workers import map_with_timeout


def square_or_misbehave(x):
    if x == "hang":
        time.sleep(60)
    if x == "boom":
        raise ValueError("bad item")
    if x == "die":
        os._exit(3)
    return x * x


def test_results_in_order_with_timeouts_errors_and_deaths():
    items = [1, "hang", 2, "boom", 3, "die", 4] + list(range(5, 30))
    t0 = time.monotonic()
    out = map_with_timeout(
        square_or_misbehave,
        items,
        timeout_s=1.0,
        workers=2,
        on_timeout=lambda x: "timeout",
        on_error=lambda x, m: f"error: {m}",
    )
    assert time.monotonic() - t0 < 20
    assert out[:7] == [
        1,
        "timeout",
        4,
        "error: ValueError: bad item",
        9,
        "error: worker process died",
        16,
    ]
    assert out[7:] == [x * x for x in range(5, 30)]


def test_empty():
    assert map_with_timeout(square_or_misbehave, [], timeout_s=1) == []
