"""The verify stage: rejection sampling. Grade every teacher sample against the gold
answer, keep what is right (and clean), and write the student's training set in
`messages` format with the reasoning inside think delimiters."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path

from protege.answers import Grade, extract_code, grade, is_degenerate, trim_after_answer
from protege.config import Recipe, VerifyConfig
from protege.errors import UserError
from protege.prompts import assistant_turn
from protege.records import Question, Sample, TrainExample, Verdict, read_jsonl, write_jsonl
from protege.rundir import RunDir, hash_config, invalidate, is_fresh, write_manifest
from protege.verify_card import write_card
from protege.verify_judge import judge_unverifiable, reformat_kept
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
    text, gold, tolerance, kind, timeout_s = item
    if kind != "code":
        return grade(text, gold, tolerance, kind)
    from protege.sandbox import Limits, run_program

    code = extract_code(text)
    if code is None:
        return Grade(False, None, "no code block found")
    if not gold:
        return Grade(None, code, "no tests to run")
    r = run_program(code, gold, Limits(timeout_s=timeout_s))
    tail = r.stderr.strip().splitlines()[-1:] if not r.passed else []
    return Grade(r.passed, code, f"tests {r.status}" + (f": {tail[0][:200]}" if tail else ""))


def gold_of(q: Question, cfg: VerifyConfig):
    """What a sample is checked against: the answer, or for code the test program."""
    return q.meta.get("tests") if cfg.kind == "code" else q.answer


def grade_all(samples: list[Sample], gold: dict, cfg: VerifyConfig) -> list[Grade | None]:
    """Grades in worker processes with a hard per-item timeout; None where a sample is
    rejected before grading."""
    texts = [answer_text(s, cfg)[0] for s in samples]
    jobs = [i for i, t in enumerate(texts) if t is not None]
    items = [(texts[i], gold[samples[i].question_id], cfg.tolerance, cfg.kind, cfg.timeout_s)
             for i in jobs]  # fmt: skip
    # a program gets cfg.timeout_s inside its sandbox; the worker gets slack for start-up
    slack = 20.0 if cfg.kind == "code" else 0.0
    graded = map_with_timeout(
        grade_item, items, timeout_s=cfg.timeout_s + slack, workers=cfg.workers,
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
        if cfg.kind == "code":
            return verdict(False, None, f"wrong program: {g.reason}")
        if g.reason.startswith("judge"):
            return verdict(False, g.extracted, g.reason)
        return verdict(False, g.extracted, f"wrong answer ({g.extracted} != {gold})")
    if is_degenerate(sample.reasoning):
        return verdict(False, g.extracted, "degenerate repetition in reasoning")
    if problem := filtered(sample, cfg):
        return verdict(False, g.extracted, problem)
    return verdict(True, g.extracted, g.reason)


def filtered(sample: Sample, cfg: VerifyConfig) -> str | None:
    """Why a correct sample is still unfit to train on, or None."""
    n = sample.usage.completion_tokens
    if n < cfg.min_tokens:
        return f"too short ({n} < {cfg.min_tokens} tokens)"
    if cfg.max_tokens is not None and n > cfg.max_tokens:
        return f"too long ({n} > {cfg.max_tokens} tokens)"
    text = sample.reasoning + sample.response
    if cfg.think_close and (cfg.think_open in text or cfg.think_close in text):
        return "unclosed or stray think delimiter"
    return None


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
        if cfg.keep in ("shortest", "longest"):
            sign = 1 if cfg.keep == "shortest" else -1
            group = sorted(group, key=lambda s: sign * s.usage.completion_tokens)
        limit = 1 if cfg.keep != "all" else cfg.max_per_question
        kept += group[:limit] if limit else group
    kept_keys = {(s.question_id, s.sample_idx) for s in kept}
    return kept, dups + [s for s in uniq if (s.question_id, s.sample_idx) not in kept_keys]


def example(s: Sample, v: Verdict, cfg: VerifyConfig) -> TrainExample:
    """The training example; an implicit answer is stated explicitly with the template,
    so the student learns to always commit to one answer."""
    judged_whole = v.reason.startswith("judged") and not s.response.strip()
    if cfg.kind == "code" or judged_whole:  # no single answer line: keep the text whole
        text = f"{s.reasoning}\n\n{s.response}".strip()
        turn = {"role": "assistant", "content": text}
        return TrainExample(
            question_id=s.question_id, sample_idx=s.sample_idx, messages=[*s.prompt, turn]
        )
    answer = trim_after_answer(s.response) if s.response.strip() else ""
    if not answer:
        answer = cfg.answer_template.format(answer=(v.extracted or "").lstrip("$ "))
    turn = assistant_turn(s.reasoning, answer, cfg.think_open, cfg.think_close)
    return TrainExample(
        question_id=s.question_id,
        sample_idx=s.sample_idx,
        messages=[*s.prompt, {"role": "assistant", "content": turn}],
    )


def decide(samples: list[Sample], gold: dict, cfg: VerifyConfig, questions: dict):
    """Verdicts for every sample and the kept ones, after grading and selection."""
    grades = grade_all(samples, gold, cfg)
    if cfg.judge is not None:
        grades = judge_unverifiable(samples, grades, questions, cfg.judge)
    verdicts = {
        (s.question_id, s.sample_idx): judge(s, gold[s.question_id], cfg, g)
        for s, g in zip(samples, grades, strict=True)
    }
    good = [s for s in samples if verdicts[(s.question_id, s.sample_idx)].correct]
    kept, dropped = select(good, cfg)
    for s in dropped:
        key = (s.question_id, s.sample_idx)
        reason = f"correct but not selected (keep={cfg.keep})"
        verdicts[key] = verdicts[key].model_copy(update={"reason": reason})
    return verdicts, good, kept


def run(recipe: Recipe, rd: RunDir, force: bool = False) -> dict | None:
    cfg = recipe.verify
    thash = recipe.generate.teacher_hash()
    chash = hash_config({"verify": cfg.model_dump(mode="json"), "teacher": thash})
    inputs = [rd.questions, rd.samples]
    if not force and is_fresh(rd, "verify", chash, inputs):
        return None
    invalidate(rd, "verify")
    t0 = time.perf_counter()
    questions = {q.id: q for q in read_jsonl(rd.questions, Question)}
    gold = {qid: gold_of(q, cfg) for qid, q in questions.items()}
    everything = read_jsonl(rd.samples, Sample)
    samples = [s for s in everything if s.teacher_hash == thash and s.question_id in gold]
    if everything and not samples:
        raise UserError(
            f"{rd.samples}: {len(everything)} samples, none from this teacher config "
            f"(hash {thash}) for these questions: run `protege generate` first"
        )
    verdicts, good, kept = decide(samples, gold, cfg, questions)
    kept_keys = {(s.question_id, s.sample_idx) for s in kept}
    examples = [example(s, verdicts[(s.question_id, s.sample_idx)], cfg) for s in kept]
    write_jsonl(rd.kept, [verdicts[k] for k in sorted(kept_keys)])
    write_jsonl(rd.rejected, [v for k, v in sorted(verdicts.items()) if k not in kept_keys])
    rewritten = 0
    if cfg.reformat is not None and kept:
        think = (cfg.think_open, cfg.think_close)
        examples, rewritten = reformat_kept(
            examples, kept, questions, gold, cfg.reformat, think, cfg.tolerance
        )
    write_jsonl(rd.train_set, examples)
    reasons = Counter(_reason_kind(v.reason) for k, v in verdicts.items() if k not in kept_keys)
    counts = {
        "samples": len(samples), "correct": len(good), "kept": len(kept),
        "rejected": len(samples) - len(kept), "questions": len(gold),
        "questions_with_kept": len({s.question_id for s in kept}),
        "rejected_by_reason": dict(reasons), "reformatted": rewritten,
    }  # fmt: skip
    hf_dir = rd.stage("verify") / "hf"
    export_hf(examples, hf_dir)
    write_card(rd, recipe, counts, by_source(questions, samples, good, kept_keys))
    return write_manifest(
        rd, "verify", config_hash=chash, inputs=inputs,
        outputs=[rd.kept, rd.rejected, rd.train_set, hf_dir, rd.stage("verify") / "README.md"],
        counts=counts, seconds=time.perf_counter() - t0,
    )  # fmt: skip


def export_hf(examples: list[TrainExample], out: Path) -> None:
    """The training set as an HF `datasets` folder (`datasets.load_from_disk`)."""
    from datasets import Dataset

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rows = [e.model_dump(mode="json") for e in examples]
    data = Dataset.from_list(rows) if rows else Dataset.from_dict(
        {"question_id": [], "sample_idx": [], "messages": []})  # fmt: skip
    data.save_to_disk(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def by_source(questions: dict, samples: list[Sample], good: list[Sample], kept_keys: set) -> list:
    """(source, domain, samples, correct, kept) rows for the dataset card."""
    correct = {(s.question_id, s.sample_idx) for s in good}
    rows: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    for s in samples:
        q, key = questions[s.question_id], (s.question_id, s.sample_idx)
        row = rows[(q.source, q.domain or "-")]
        row[0] += 1
        row[1] += key in correct
        row[2] += key in kept_keys
    return [(*k, *v) for k, v in sorted(rows.items())]


def _reason_kind(reason: str) -> str:
    return reason.split(" (")[0].split(":")[0]
