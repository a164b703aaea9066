"""The verify stage: rejection sampling. Grade every teacher sample against the gold
answer, keep what is right (and clean), and write the student's training set in
`messages` format with the reasoning inside think delimiters."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

from protege.answers import Grade, grade, is_degenerate, trim_after_answer
from protege.config import Recipe, VerifyConfig
from protege.prompts import assistant_turn
from protege.records import Question, Sample, TrainExample, Verdict, read_jsonl, write_jsonl
from protege.rundir import RunDir, hash_config, invalidate, is_fresh, write_manifest
from protege.workers import map_with_timeout


def answer_text(sample: Sample, cfg: VerifyConfig) -> tuple[str | None, str | None]:
    """(text to grade, None) or (None, why the sample is rejected before grading)."""
    if sample.error:
        return None, f"teacher error: {sample.error}"
    if sample.response.strip():
        return sample.response, None
    if not cfg.implicit_answers:
        return None, "no explicit final answer"
    if sample.finish_reason == "length":  # its last number is mid-thought, not an answer
        return None, "cut off before an answer"
    return sample.reasoning, None


def grade_item(item: tuple) -> Grade:
    """One grading job, run in a worker process (module-level so it pickles)."""
    text, gold, tolerance, kind = item
    return grade(text, gold, tolerance, kind)


def grade_all(samples: list[Sample], gold: dict, cfg: VerifyConfig) -> list[Grade | None]:
    """Grades in worker processes with a hard per-item timeout; None where a sample is
    rejected before grading."""
    texts = [answer_text(s, cfg)[0] for s in samples]
    jobs = [i for i, t in enumerate(texts) if t is not None]
    items = [(texts[i], gold[samples[i].question_id], cfg.tolerance, cfg.kind) for i in jobs]
    graded = map_with_timeout(
        grade_item, items, timeout_s=cfg.timeout_s, workers=cfg.workers,
        on_timeout=lambda item: Grade(None, None, f"grading timed out after {cfg.timeout_s}s"),
        on_error=lambda item, msg: Grade(None, None, f"grading failed: {msg}"),
    )  # fmt: skip
    out: list[Grade | None] = [None] * len(samples)
    for i, g in zip(jobs, graded, strict=True):
        out[i] = g
    return out


def judge(sample: Sample, gold, cfg: VerifyConfig, g: Grade | None = None) -> Verdict:
    """One sample's verdict; `reason` says why it was kept or rejected. `g` is its grade
    when already computed (by `grade_all`)."""

    def verdict(ok: bool, extracted: str | None, reason: str) -> Verdict:
        return Verdict(question_id=sample.question_id, sample_idx=sample.sample_idx,
                       extracted=extracted, correct=ok, reason=reason)  # fmt: skip

    text, rejected = answer_text(sample, cfg)
    if rejected:
        return verdict(False, None, rejected)
    g = g or grade(text, gold, cfg.tolerance, cfg.kind)
    if g.correct is None:
        return verdict(False, g.extracted, f"cannot be checked: {g.reason}")
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
    grades = grade_all(samples, gold, cfg)
    verdicts = {
        (s.question_id, s.sample_idx): judge(s, gold[s.question_id], cfg, g)
        for s, g in zip(samples, grades, strict=True)
    }
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
