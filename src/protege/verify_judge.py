"""Verification steps that ask a model: an LLM judge for samples no gold answer can
check (s1 graded its traces this way), and Sky-T1-style rewriting of kept traces into one
template. Any teacher backend serves either."""

from __future__ import annotations

from protege.answers import Grade, grade, parse_judgement, split_reasoning, trim_after_answer
from protege.backends import make_backend
from protege.backends.base import SamplingParams
from protege.config import GenerateConfig
from protege.prompts import assistant_turn, judge_messages, reformat_messages
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


def reformat_kept(
    examples: list,
    kept: list[Sample],
    questions: dict,
    gold: dict,
    cfg: GenerateConfig,
    think: tuple[str, str],
    tolerance: float,
) -> tuple[list, int]:
    """Rewrite each kept trace through `cfg`'s teacher; keep a rewrite only when its
    answer still verifies against the gold, else the original. Returns (examples, rewritten)."""
    chats = [
        reformat_messages(questions[s.question_id].problem, s.reasoning, s.response) for s in kept
    ]
    params = SamplingParams(temperature=0.0, max_new_tokens=cfg.max_new_tokens)
    out, rewritten = list(examples), 0
    for batch in make_backend(cfg).generate(chats, params):
        for i, c in batch:
            reasoning, response = split_reasoning(c.text, *think)
            target = gold[kept[i].question_id]
            if c.error or not response or not grade(response, target, tolerance).correct:
                continue  # a failed or unfaithful rewrite: the verified original stays
            turn = assistant_turn(reasoning, trim_after_answer(response), *think)
            msgs = [*examples[i].messages[:-1], {"role": "assistant", "content": turn}]
            out[i] = examples[i].model_copy(update={"messages": msgs})
            rewritten += 1
    return out, rewritten
