"""The verify stage: rejection sampling. Grade every teacher sample against the gold
answer, keep what is right (and clean), and write the student's training set in
`messages` format with the reasoning inside think delimiters."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

from protege.answers import grade, is_degenerate, trim_after_answer
from protege.config import Recipe, VerifyConfig
from protege.prompts import assistant_turn
from protege.records import Question, Sample, TrainExample, Verdict, read_jsonl, write_jsonl
from protege.rundir import RunDir, hash_config, invalidate, is_fresh, write_manifest


def judge(sample: Sample, gold: str | None, cfg: VerifyConfig) -> Verdict:
    """One sample's verdict; `reason` says why it was kept or rejected."""

    def verdict(ok: bool, extracted: str | None, reason: str) -> Verdict:
        return Verdict(
            question_id=sample.question_id,
            sample_idx=sample.sample_idx,
            extracted=extracted,
            correct=ok,
            reason=reason,
        )

    if sample.error:
        return verdict(False, None, f"teacher error: {sample.error}")
    text = sample.response
    if not text.strip():
        if not cfg.implicit_answers:
            return verdict(False, None, "no explicit final answer")
        if sample.finish_reason == "length":  # its last number is mid-thought, not an answer
            return verdict(False, None, "cut off before an answer")
        text = sample.reasoning
    g = grade(text, gold, cfg.tolerance)
    if g.correct is None:
        return verdict(False, g.extracted, "gold answer cannot be checked")
    if not g.correct:
        return verdict(False, g.extracted, f"wrong answer ({g.extracted} != {gold})")
    if is_degenerate(sample.reasoning):
        return verdict(False, g.extracted, "degenerate repetition in reasoning")
    return verdict(True, g.extracted, g.reason)


def select(good: list[Sample], cfg: VerifyConfig) -> tuple[list[Sample], list[Sample]]:
    """Per question: drop duplicate traces, apply the keep policy and the cap.
    Returns (kept, dropped) where dropped samples were correct but not selected."""
    seen, uniq, dups = set(), [], []
    for s in good:
        key = (s.question_id, s.reasoning.strip())
        (dups if key in seen else uniq).append(s)
        seen.add(key)
    by_q: dict[str, list[Sample]] = defaultdict(list)
    for s in uniq:
        by_q[s.question_id].append(s)
    kept = []
    for group in by_q.values():
        if cfg.keep == "shortest":
            group = sorted(group, key=lambda s: s.usage.completion_tokens)
        limit = 1 if cfg.keep != "all" else cfg.max_per_question
        kept += group[:limit] if limit else group
    kept_keys = {(s.question_id, s.sample_idx) for s in kept}
    return kept, dups + [s for s in uniq if (s.question_id, s.sample_idx) not in kept_keys]


def example(s: Sample, v: Verdict, cfg: VerifyConfig) -> TrainExample:
    """The training example; an implicit answer is stated explicitly with the template,
    so the student learns to always commit to one answer."""
    answer = trim_after_answer(s.response) if s.response.strip() else ""
    if not answer:
        answer = cfg.answer_template.format(answer=(v.extracted or "").lstrip("$ "))
    turn = assistant_turn(s.reasoning, answer, cfg.think_open, cfg.think_close)
    return TrainExample(
        question_id=s.question_id,
        sample_idx=s.sample_idx,
        messages=[*s.prompt, {"role": "assistant", "content": turn}],
    )


def run(recipe: Recipe, rd: RunDir, force: bool = False) -> dict | None:
    cfg = recipe.verify
    thash = recipe.generate.teacher_hash()
    chash = hash_config({"verify": cfg.model_dump(mode="json"), "teacher": thash})
    inputs = [rd.questions, rd.samples]
    if not force and is_fresh(rd, "verify", chash, inputs):
        return None
    invalidate(rd, "verify")
    t0 = time.perf_counter()
    gold = {q.id: q.answer for q in read_jsonl(rd.questions, Question)}
    samples = [
        s
        for s in read_jsonl(rd.samples, Sample)
        if s.teacher_hash == thash and s.question_id in gold
    ]
    verdicts = {(s.question_id, s.sample_idx): judge(s, gold[s.question_id], cfg) for s in samples}
    good = [s for s in samples if verdicts[(s.question_id, s.sample_idx)].correct]
    kept, dropped = select(good, cfg)
    for s in dropped:
        v = verdicts[(s.question_id, s.sample_idx)]
        verdicts[(s.question_id, s.sample_idx)] = v.model_copy(
            update={"reason": f"correct but not selected (keep={cfg.keep})"}
        )
    kept_keys = {(s.question_id, s.sample_idx) for s in kept}
    write_jsonl(rd.kept, [verdicts[k] for k in sorted(kept_keys)])
    write_jsonl(rd.rejected, [v for k, v in sorted(verdicts.items()) if k not in kept_keys])
    write_jsonl(
        rd.train_set, [example(s, verdicts[(s.question_id, s.sample_idx)], cfg) for s in kept]
    )
    reasons = Counter(_reason_kind(v.reason) for k, v in verdicts.items() if k not in kept_keys)
    counts = {
        "samples": len(samples),
        "correct": len(good),
        "kept": len(kept),
        "rejected": len(samples) - len(kept),
        "questions": len(gold),
        "questions_with_kept": len({s.question_id for s in kept}),
        "rejected_by_reason": dict(reasons),
    }
    return write_manifest(
        rd,
        "verify",
        config_hash=chash,
        inputs=inputs,
        outputs=[rd.kept, rd.rejected, rd.train_set],
        counts=counts,
        seconds=time.perf_counter() - t0,
    )


def _reason_kind(reason: str) -> str:
    return reason.split(" (")[0].split(":")[0]
