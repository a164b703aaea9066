"""A deterministic, seeded generator of verifiable arithmetic word problems.

The quickstart needs questions with checkable answers and no download. Level k composes
k steps on one running quantity (level 1: add or subtract; level 2 adds a multiplication
step; level 3 adds halving), so difficulty is a dial, and every answer is a
non-negative integer computed alongside the text.
"""

from __future__ import annotations

import random

NAMES = [
    ("Mia", "she"),
    ("Leo", "he"),
    ("Ava", "she"),
    ("Noah", "he"),
    ("Zoe", "she"),
    ("Omar", "he"),
    ("Lena", "she"),
    ("Ravi", "he"),
    ("Iris", "she"),
    ("Tom", "he"),
    ("Sara", "she"),
    ("Ken", "he"),
    ("Nora", "she"),
    ("Eli", "he"),
    ("Ana", "she"),
]
ITEMS = [
    "apples",
    "marbles",
    "stickers",
    "pencils",
    "cookies",
    "coins",
    "books",
    "shells",
    "cards",
    "stamps",
    "balloons",
    "candies",
    "buttons",
    "flowers",
    "eggs",
    "toy cars",
]
CONTAINERS = ["boxes", "bags", "packs", "jars", "baskets"]


def _add(r: random.Random, n: int, who: str, item: str) -> tuple[str, int, str]:
    k = r.randint(2, 30)
    verb = r.choice(["buys", "finds", "gets", "receives"])
    return f"Then {who} {verb} {k} more {item}.", n + k, "add"


def _sub(r: random.Random, n: int, who: str, item: str) -> tuple[str, int, str]:
    if n < 3:
        return _add(r, n, who, item)
    k = r.randint(1, min(n - 1, 25))
    verb = r.choice(["gives away", "loses", "uses", "sells"])
    return f"Then {who} {verb} {k} {item}.", n - k, "sub"


def _mul(r: random.Random, n: int, who: str, item: str) -> tuple[str, int, str]:
    a, b = r.randint(2, 6), r.randint(2, 9)
    box = r.choice(CONTAINERS)
    return f"Then {who} buys {a} {box} with {b} {item} in each.", n + a * b, "mul"


def _half(r: random.Random, n: int, who: str, item: str) -> tuple[str, int, str]:
    if n % 2:
        return _sub(r, n, who, item)
    return f"Then {who} gives away half of the {item}.", n // 2, "half"


STEPS_BY_LEVEL = {1: [_add, _sub], 2: [_add, _sub, _mul], 3: [_add, _sub, _mul, _half]}


def make_problem(r: random.Random, level: int) -> tuple[str, int, list[str]]:
    """One problem of `level` steps: (text, answer, step kinds)."""
    if level not in STEPS_BY_LEVEL:
        raise ValueError(f"level must be one of {sorted(STEPS_BY_LEVEL)}, got {level}")
    name, pronoun = r.choice(NAMES)
    item = r.choice(ITEMS)
    n = r.randint(5, 40)
    sentences = [f"{name} has {n} {item}."]
    kinds = []
    for _ in range(level):
        step = r.choice(STEPS_BY_LEVEL[level])
        sentence, n, kind = step(r, n, pronoun, item)
        sentences.append(sentence)
        kinds.append(kind)
    sentences.append(f"How many {item} does {name} have now?")
    return " ".join(sentences), n, kinds


def generate(n: int, levels: list[int], seed: int) -> list[dict]:
    """`n` problems cycling through `levels`, identical for the same arguments."""
    r = random.Random(seed)
    out = []
    for i in range(n):
        level = levels[i % len(levels)]
        text, answer, kinds = make_problem(r, level)
        out.append({"problem": text, "answer": str(answer), "level": level, "steps": kinds})
    return out
