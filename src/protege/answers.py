"""Answer extraction and equivalence, shared by verification and evaluation.

Extraction looks for an explicit final answer first (`\\boxed{}`, `#### N`, "The answer
is ...", "Final answer: ...") and only then falls back to the last number in the text;
the method used is recorded, because a fallback match is weaker evidence.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from typing import Literal

# A minus sign counts only when attached and not a binary minus ("10-5", "x -5" stay 5).
_NUM = r"(?:(?<![\w)])-)?(?:\$\s?)?(?:\d[\d,]*(?:\.\d+)?|\.\d+)"
_PATTERNS = [
    ("hashes", re.compile(r"####\s*(" + _NUM + ")")),
    ("answer_is", re.compile(r"answer\s+is\s*:?\s*\**\s*(" + _NUM + ")", re.IGNORECASE)),
    ("final_answer", re.compile(r"final\s+answer\s*:?\s*\**\s*(" + _NUM + ")", re.IGNORECASE)),
]
_LAST_NUMBER = re.compile(_NUM)
_TEXT_ANSWER = re.compile(r"answer\s+is\s*:?\s*\**\s*([^\n]+?)\**\s*(?:\.\s|\.?$|\n)", re.I)


# An answer statement that is complete: the number is followed by a sentence end or a
# line break, so "The answer is 12" is not cut before "12,500".
ANSWER_DONE = (
    r"(?:answer\s+is\s*:?\s*\**\s*|####\s*)(?:\$\s?)?-?[\d,]*\d(?:\.\d+)?\**(?:\s+[a-zA-Z]+){0,3}\s*(?:\.\s|\n)"
    r"|\\boxed\{[^{}]*\}"
)


@dataclass(frozen=True)
class Grade:
    correct: bool | None  # None: the gold answer itself cannot be checked
    extracted: str | None
    reason: str


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), nested braces included."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None  # unbalanced: no answer rather than a truncated one


def _first_statement(text: str) -> tuple[re.Match | None, str]:
    """The earliest explicit answer statement ("The answer is N", "#### N", ...)."""
    hits = [(m, name) for name, pat in _PATTERNS if (m := pat.search(text))]
    return min(hits, key=lambda h: h[0].start()) if hits else (None, "none")


def extract_answer(text: str) -> tuple[str | None, str]:
    """(answer, method). Methods: boxed, hashes, answer_is, final_answer, last_number, none.

    The last `\boxed{}` wins (reasoning models box their final answer at the end); a
    plain statement is taken at its first occurrence, because small models that state an
    answer and then ramble on tend to restate other numbers as "the answer"."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed, "boxed"
    hashes = _PATTERNS[0][1].findall(text)  # GSM8K's explicit final-answer marker
    if hashes:
        return hashes[-1].strip(), "hashes"
    m, method = _first_statement(text)
    if m is not None:
        return m.group(1).strip(), method
    nums = _LAST_NUMBER.findall(text)
    if nums:
        return nums[-1].strip(), "last_number"
    return None, "none"


def split_reasoning(text: str, think_open: str = "<think>", think_close: str = "</think>"):
    """(reasoning, response) of one model output.

    With think delimiters in the text: what is inside, and what follows the close. Without:
    the lines before the first explicit answer statement, and the rest starting at that
    line. No explicit answer: all reasoning, empty response."""
    if think_open and think_close and think_close in text:
        head, _, tail = text.partition(think_close)
        return head.replace(think_open, "", 1).strip(), tail.strip()
    if "\\boxed{" in text:
        start = text.rfind("\\boxed{")
    else:
        m, _ = _first_statement(text)
        if m is None:
            return text.strip(), ""
        start = m.start()
    line_start = text.rfind("\n", 0, start) + 1
    return text[:line_start].strip(), text[line_start:].strip()


def answer_line(response: str) -> str:
    """The first line of a response: the answer statement itself, without what follows."""
    return response.strip().split("\n", 1)[0].strip()


def to_number(s: str | None) -> float | None:
    """'$1,234.50' -> 1234.5; '27.0' -> 27.0; '\\frac{1}{2}' -> 0.5; otherwise None."""
    if s is None:
        return None
    t = s.strip().rstrip(".").replace(",", "").replace("$", "").replace("\\%", "")
    t = t.replace("%", "").replace("\\!", "").strip()
    frac = re.fullmatch(r"-?\\d?frac\{(-?\d+)\}\{(-?\d+)\}", t)
    if frac and int(frac.group(2)) != 0:
        sign = -1 if t.startswith("-") else 1
        return sign * int(frac.group(1)) / int(frac.group(2))
    try:
        value = float(t)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def gold_answer(raw: str, fmt: str = "plain") -> str:
    """Normalize a source's gold answer: GSM8K's `... #### N`, MATH's `\\boxed{}`, or plain."""
    if fmt == "gsm8k" and "####" in raw:
        return raw.rsplit("####", 1)[1].strip()
    if fmt == "boxed":
        boxed = last_boxed(raw)
        if boxed is not None:
            return boxed
    return raw.strip()


Kind = Literal["auto", "math", "numeric", "exact"]


def grade(
    response: str, gold: str | list[str] | None, tolerance: float = 1e-6, kind: Kind = "auto"
) -> Grade:
    """Is the response's final answer equal to the gold answer (or to any in a list)?

    kind: `numeric` compares numbers (relative/absolute tolerance); `exact` compares
    strings; `math` asks math-verify for symbolic equivalence (gold parsed first: a gold
    it cannot parse gives correct=None, "cannot verify", not "wrong"); `auto` is numeric
    when both sides are plain numbers and math otherwise."""
    extracted, method = extract_answer(response)
    text_answer = _TEXT_ANSWER.search(response) if kind == "exact" else None
    if text_answer and method in ("last_number", "none"):  # "The answer is Paris."
        extracted, method = text_answer.group(1).strip(), "answer_is_text"
    if gold is None or (isinstance(gold, list) and not gold):
        return Grade(None, extracted, "no gold answer")
    if extracted is None:
        return Grade(False, None, "no answer found")
    grades = [_grade_one(extracted, method, g, tolerance, kind) for g in _as_list(gold)]
    return next((g for g in grades if g.correct), None) or next(
        (g for g in grades if g.correct is False), grades[0]
    )


def _as_list(gold: str | list[str]) -> list[str]:
    return [gold] if isinstance(gold, str) else [str(g) for g in gold]


def _grade_one(extracted: str, method: str, gold: str, tol: float, kind: Kind) -> Grade:
    if kind == "exact":
        same = _norm(extracted) == _norm(gold)
        return Grade(same, extracted, f"exact match via {method}: {same}")
    g, p = to_number(gold), to_number(extracted)
    if kind == "numeric" or (kind == "auto" and g is not None and p is not None):
        if g is None:
            return Grade(None, extracted, f"gold {gold!r} is not a number")
        if p is None:
            return Grade(False, extracted, f"not a number via {method}")
        ok = math.isclose(p, g, rel_tol=tol, abs_tol=tol)
        return Grade(ok, extracted, f"{'equal' if ok else 'differs'} via {method}")
    return _math_equal(extracted, method, gold)


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip().strip("$").rstrip(".")).lower()


def _latex(s: str) -> str:
    # escaped dollars and thin spaces are typesetting, not math: "\\$32,\\!348" is 32348
    s = s.strip().replace("\\$", "").replace("\\!", "")
    return s if "$" in s or "\\(" in s or "\\[" in s else f"${s}$"


def _math_equal(extracted: str, method: str, gold: str) -> Grade:
    from math_verify import parse, verify

    # math-verify's own timeouts use SIGALRM, which exists only in the main thread;
    # elsewhere the caller (a worker pool) must bound the time.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    gold_p = parse(_latex(gold), parsing_timeout=timeout)
    if not any(not isinstance(x, str) for x in gold_p):
        # math-verify hands back the raw string when it cannot parse: a match can still
        # be confirmed, a mismatch cannot
        if _norm(extracted) == _norm(gold):
            return Grade(True, extracted, f"exact match via {method} (gold is not math)")
        return Grade(None, extracted, f"cannot verify: gold {gold!r} does not parse")
    pred_p = parse(_latex(extracted), parsing_timeout=timeout)
    if not pred_p:
        return Grade(False, extracted, f"answer does not parse via {method}")
    ok = bool(verify(gold_p, pred_p, timeout_seconds=timeout))
    return Grade(ok, extracted, f"{'equivalent' if ok else 'not equivalent'} via {method}")


_CODE_BLOCK = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_code(text: str) -> str | None:
    """The last fenced code block (```python ... ```), where coding answers live."""
    blocks = _CODE_BLOCK.findall(text)
    return blocks[-1].strip() if blocks else None


def trim_after_answer(response: str) -> str:
    """The response up to the end of the line holding its final answer: what a model says
    after committing to an answer is noise we do not want a student to learn."""
    start = response.rfind("\\boxed{")
    if start < 0:
        m, _ = _first_statement(response)
        if m is None:
            return response.strip()
        start = m.end()
    end = response.find("\n", start)
    return (response if end < 0 else response[:end]).strip()


def is_degenerate(text: str, max_repeats: int = 2) -> bool:
    """True when some non-trivial line repeats more than `max_repeats` times: the loop
    small models fall into when sampling runs away."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        key = line.strip().lower()
        if len(key) >= 8:
            counts[key] = counts.get(key, 0) + 1
            if counts[key] > max_repeats:
                return True
    return False


_VERDICT = re.compile(r"VERDICT:\s*\**\s*(CORRECT|INCORRECT)", re.IGNORECASE)


def parse_judgement(text: str) -> bool | None:
    """An LLM judge's last `VERDICT: CORRECT|INCORRECT`, or None when it gave none."""
    hits = _VERDICT.findall(text)
    return hits[-1].upper() == "CORRECT" if hits else None
