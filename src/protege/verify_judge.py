"""An LLM judge for samples no gold answer can check (s1 graded its traces this way):
any teacher backend, asked for a one-line verdict per sample."""

from __future__ import annotations

from protege.answers import Grade, parse_judgement
from protege.backends import make_backend
from protege.backends.base import SamplingParams
from protege.config import GenerateConfig
from protege.prompts import judge_messages
from protege.records import Question, Sample


def judge_unverifiable(
    samples: list[Sample], grades: list, questions: dict[str, Question], cfg: GenerateConfig
) -> list:
    """Replace each 'cannot be checked' grade with the judge's decision."""
    todo = [i for i, g in enumerate(grades) if g is not None and g.correct is None]
    if not todo:
        return grades
    chats = []
    for i in todo:
        s, q = samples[i], questions[samples[i].question_id]
        reference = q.answer if isinstance(q.answer, str) else None
        chats.append(judge_messages(q.problem, f"{s.reasoning}\n\n{s.response}", reference))
    params = SamplingParams(temperature=0.0, max_new_tokens=cfg.max_new_tokens)
    out = list(grades)
    for batch in make_backend(cfg).generate(chats, params):
        for j, c in batch:
            i = todo[j]
            ok = parse_judgement(c.text) if not c.error else None
            why = (
                (f"judge error: {c.error}" if c.error else "judge gave no verdict")
                if ok is None
                else f"judged {'correct' if ok else 'incorrect'} by {cfg.teacher}"
            )
            out[i] = Grade(ok, grades[i].extracted, why)
    return out
