"""The generate stage: the teacher answers every selected question `samples_per_question`
times. Each batch is appended to `samples.jsonl` as it finishes, so a killed run resumes
where it stopped: a (question, sample index, teacher config) already on disk is never
asked again and never written twice."""

from __future__ import annotations

import time

from tqdm import tqdm

from protege.answers import ANSWER_DONE, split_reasoning
from protege.backends.base import SamplingParams
from protege.config import Recipe
from protege.prompts import question_messages
from protege.records import Question, Sample, Usage, append_jsonl, read_jsonl, repair_jsonl
from protege.rundir import RunDir, hash_config, invalidate, is_fresh, write_manifest


def pending(questions: list[Question], done: set[tuple[str, int]], n: int):
    """(question, sample index) pairs not yet on disk, in a stable order."""
    return [(q, i) for q in questions for i in range(n) if (q.id, i) not in done]


def existing(rd: RunDir, teacher_hash: str) -> list[Sample]:
    """Samples already written by this teacher config; a torn last line is cut away."""
    if not rd.samples.exists():
        return []
    repair_jsonl(rd.samples)
    return [s for s in read_jsonl(rd.samples, Sample) if s.teacher_hash == teacher_hash]


def to_sample(q: Question, idx: int, teacher: str, thash: str, chat, c) -> Sample:
    reasoning, response = split_reasoning(c.text)
    return Sample(
        question_id=q.id,
        sample_idx=idx,
        teacher=teacher,
        teacher_hash=thash,
        prompt=chat,
        reasoning=reasoning,
        response=response,
        finish_reason=c.finish_reason,
        usage=Usage(prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens),
        latency_s=round(c.latency_s, 4),
    )


def run(recipe: Recipe, rd: RunDir, force: bool = False) -> dict | None:
    cfg = recipe.generate
    chash, thash = hash_config(cfg.model_dump(mode="json")), cfg.teacher_hash()
    if not force and is_fresh(rd, "generate", chash, [rd.questions]):
        return None
    invalidate(rd, "generate")
    t0 = time.perf_counter()
    questions = read_jsonl(rd.questions, Question)
    done = {(s.question_id, s.sample_idx) for s in existing(rd, thash)}
    todo = pending(questions, done, cfg.samples_per_question)
    if todo:
        _generate(recipe, rd, todo, thash)
    wanted = {q.id for q in questions}
    samples = [s for s in existing(rd, thash) if s.question_id in wanted]
    counts = {
        "questions": len(questions),
        "samples": len(samples),
        "resumed": len(done),
        "completion_tokens": sum(s.usage.completion_tokens for s in samples),
        "prompt_tokens": sum(s.usage.prompt_tokens for s in samples),
        "truncated": sum(s.finish_reason == "length" for s in samples),
    }
    return write_manifest(
        rd,
        "generate",
        config_hash=chash,
        inputs=[rd.questions],
        outputs=[rd.samples],
        counts=counts,
        seconds=time.perf_counter() - t0,
        cost=sum(s.cost_usd for s in samples),
        extra={
            "teacher": {
                "model": cfg.teacher,
                "provider": "hf",
                "hash": thash,
                "params": cfg.model_dump(mode="json"),
            }
        },
    )


def _generate(recipe: Recipe, rd: RunDir, todo, thash: str) -> None:
    from protege.backends.hf import HFBackend

    cfg = recipe.generate
    backend = HFBackend(cfg.teacher, cfg.precision, cfg.batch_size)
    chats = [question_messages(q.problem) for q, _ in todo]
    stop = ANSWER_DONE if cfg.stop_at_answer else None
    params = SamplingParams(cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.seed, stop)
    tokens = 0
    bar = tqdm(total=len(todo), desc="generate", unit="sample", dynamic_ncols=True)
    for batch in backend.generate(chats, params):
        recs = [to_sample(*todo[i], cfg.teacher, thash, chats[i], c) for i, c in batch]
        append_jsonl(rd.samples, recs)
        tokens += sum(c.completion_tokens for _, c in batch)
        bar.update(len(batch))
        bar.set_postfix(
            tokens=tokens, tok_s=f"{tokens / max(bar.format_dict['elapsed'], 1e-9):.0f}"
        )
    bar.close()
