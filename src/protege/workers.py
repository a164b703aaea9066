"""Map a function over items in worker processes, with a hard per-item timeout.

Used where one item can hang or blow up: symbolic math equivalence (sympy can run for
minutes on adversarial input) and running untrusted programs. The timeout is enforced by
the parent, which kills a worker that overruns and starts a fresh one; nothing relies on
SIGALRM, which only works in a main thread.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from typing import Any


def _serve(fn: Callable, conn) -> None:
    while True:
        task = conn.recv()
        if task is None:
            return
        idx, item = task
        try:
            conn.send((idx, True, fn(item)))
        except Exception as e:  # the item's failure, reported, not the worker's death
            conn.send((idx, False, f"{type(e).__name__}: {e}"))


class _Worker:
    def __init__(self, ctx, fn: Callable):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(fn, child), daemon=True)
        self.proc.start()
        child.close()
        self.task: int | None = None
        self.started = 0.0

    def give(self, idx: int, item: Any) -> None:
        self.conn.send((idx, item))
        self.task, self.started = idx, time.monotonic()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()


def map_with_timeout(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    timeout_s: float,
    workers: int = 0,
    on_timeout: Callable[[Any], Any] = lambda item: None,
    on_error: Callable[[Any, str], Any] = lambda item, msg: None,
) -> list[Any]:
    """`[fn(x) for x in items]` across processes, in order. An item that runs past
    `timeout_s` gets `on_timeout(item)`; one that raises gets `on_error(item, message)`;
    a worker that dies (killed by the OS, say) is replaced and its item treated as an error.
    `fn` must be a picklable module-level function."""
    if not items:
        return []
    n = min(workers or os.cpu_count() or 1, len(items))
    ctx = mp.get_context("spawn")  # no forked copies of a parent holding torch threads
    pool = [_Worker(ctx, fn) for _ in range(n)]
    results: list[Any] = [None] * len(items)
    todo = list(range(len(items)))[::-1]
    pending = len(items)
    try:
        for w in pool:
            if todo:
                i = todo.pop()
                w.give(i, items[i])
        while pending:
            pending -= _step(ctx, fn, pool, items, results, todo, timeout_s, on_timeout, on_error)
    finally:
        for w in pool:
            if w.proc.is_alive():
                w.kill()
    return results


def _step(ctx, fn, pool, items, results, todo, timeout_s, on_timeout, on_error) -> int:
    """Wait for results or the nearest deadline; returns how many items finished."""
    busy = [w for w in pool if w.task is not None]
    deadline = min(w.started for w in busy) + timeout_s
    ready = wait([w.conn for w in busy], timeout=max(0.0, deadline - time.monotonic()))
    finished = 0
    for slot, w in enumerate(pool):
        if w.task is None:
            continue
        i = w.task
        if w.conn in ready:
            try:
                idx, ok, value = w.conn.recv()
                results[idx] = value if ok else on_error(items[idx], value)
            except EOFError:  # the worker died mid-item
                results[i] = on_error(items[i], "worker process died")
                w.kill()
                pool[slot] = w = _Worker(ctx, fn)
        elif time.monotonic() - w.started >= timeout_s:
            results[i] = on_timeout(items[i])
            w.kill()
            pool[slot] = w = _Worker(ctx, fn)
        else:
            continue
        finished += 1
        w.task = None
        if todo:
            j = todo.pop()
            w.give(j, items[j])
    return finished
