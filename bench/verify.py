"""Verifications per second over MATH-500 gold/solution pairs (math-verify), with one
worker process vs one per core, measured in one run.

    .venv/bin/python bench/verify.py [--data ../shared/data/math500/test.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from protege.verify import grade_item
from protege.workers import map_with_timeout

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "math500" / "test.jsonl"


def rate(items: list, workers: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    grades = map_with_timeout(grade_item, items, timeout_s=30, workers=workers)
    return len(items) / (time.perf_counter() - t0), sum(bool(g and g.correct) for g in grades)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DEFAULT)
    args = ap.parse_args()
    rows = [json.loads(x) for x in args.data.read_text().splitlines()]
    items = [(r["solution"], r["answer"], 1e-6, "math", 10.0) for r in rows]
    cores = os.cpu_count() or 1
    one, ok1 = rate(items, 1)
    many, ok_n = rate(items, cores)
    print(f"1 worker: {one:.1f} verifications/s ({ok1}/{len(items)} verified)")
    print(f"{cores} workers: {many:.1f} verifications/s ({ok_n}/{len(items)} verified)")
    print(f"speed-up: {many / one:.2f}x")


if __name__ == "__main__":
    main()
