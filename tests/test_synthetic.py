import re

import pytest

from protege.curate import synthetic


def replay(problem: str) -> int:
    """Recompute a problem's answer from its text alone."""
    n = int(re.match(r"\w+ has (\d+) ", problem).group(1))
    for sent in problem.split(". ")[1:]:
        if m := re.search(r"buys (\d+) \w+ with (\d+) .* in each", sent):
            n += int(m.group(1)) * int(m.group(2))
        elif "half" in sent:
            n //= 2
        elif m := re.search(r"(\d+) more", sent):
            n += int(m.group(1))
        elif m := re.search(r"(?:gives away|loses|uses|sells) (\d+)", sent):
            n -= int(m.group(1))
    return n


def test_deterministic_and_seeded():
    assert synthetic.generate(20, [1, 2, 3], 7) == synthetic.generate(20, [1, 2, 3], 7)
    assert synthetic.generate(20, [1, 2, 3], 7) != synthetic.generate(20, [1, 2, 3], 8)


@pytest.mark.parametrize("level", [1, 2, 3])
def test_answers_follow_from_the_text(level):
    for p in synthetic.generate(200, [level], level):
        assert p["level"] == level and len(p["steps"]) == level
        assert int(p["answer"]) == replay(p["problem"]) >= 0, p


def test_bad_level():
    import random

    with pytest.raises(ValueError, match="level must be one of"):
        synthetic.make_problem(random.Random(0), 9)
