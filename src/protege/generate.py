"""The generate stage: the teacher answers every selected question `samples_per_question`
times. Each batch is appended to `samples.jsonl` as it finishes, so a killed run resumes
where it stopped: a (question, sample index, teacher config) already on disk is never
asked again and never written twice."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from protege.answers import ANSWER_DONE, split_reasoning
from protege.backends import is_proprietary, make_backend
from protege.backends.base import SamplingParams
from protege.config import GenerateConfig, Price, Recipe
from protege.errors import UserError
from protege.prompts import completion_prompt, question_messages
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


def to_sample(q: Question, idx: int, cfg: GenerateConfig, thash: str, chat, c) -> Sample:
    """A backend's Completion as a Sample; reasoning from its own field when the API
    returned one, else from think delimiters or the text before the answer."""
    if c.reasoning is not None:
        reasoning, response = c.reasoning.strip(), c.text.strip()
    else:
        reasoning, response = split_reasoning(c.text)
    usage = Usage(prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens,
                  reasoning_tokens=c.reasoning_tokens)  # fmt: skip
    return Sample(
        question_id=q.id, sample_idx=idx, teacher=c.model or cfg.teacher, teacher_hash=thash,
        prompt=chat, reasoning=reasoning, response=response, finish_reason=c.finish_reason,
        usage=usage, cost_usd=cost_usd(usage, cfg.prices.get(cfg.teacher)),
        latency_s=round(c.latency_s, 4),
        error=f"{c.error_class}: {c.error}" if c.error else None,
    )  # fmt: skip


def cost_usd(usage: Usage, price: Price | None) -> float:
    """Dollars for one sample from the price table (reasoning tokens are part of the
    completion tokens, priced at the reasoning price when one is given)."""
    if price is None:
        return 0.0
    reasoning = price.reasoning_per_mtok
    plain = usage.completion_tokens - (usage.reasoning_tokens if reasoning is not None else 0)
    dollars = usage.prompt_tokens * price.input_per_mtok + plain * price.output_per_mtok
    dollars += usage.reasoning_tokens * (reasoning or 0.0) if reasoning is not None else 0.0
    return round(dollars / 1e6, 8)


TERMS_NOTICE = (
    "using a proprietary model's outputs to train another model may violate the "
    "provider's terms of service; check them before training on these samples"
)


def provenance(cfg: GenerateConfig, thash: str, samples: list[Sample]) -> dict:
    """Who the teacher was, for the manifest and the dataset card. No secrets."""
    params = cfg.model_dump(mode="json", exclude={"api_key_file", "prices"})
    return {
        "provider": cfg.provider,
        "model": cfg.teacher,
        "versions": sorted({s.teacher for s in samples}),
        "hash": thash,
        "params": params,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "terms_notice": TERMS_NOTICE if is_proprietary(cfg) else None,
    }


def run(recipe: Recipe, rd: RunDir, force: bool = False) -> dict | None:
    cfg = recipe.generate
    chash, thash = hash_config(cfg.model_dump(mode="json")), cfg.teacher_hash()
    if not force and is_fresh(rd, "generate", chash, [rd.questions]):
        return None
    invalidate(rd, "generate")
    t0 = time.perf_counter()
    questions = read_jsonl(rd.questions, Question)
    before = existing(rd, thash)
    done = {(s.question_id, s.sample_idx) for s in before}
    todo = pending(questions, done, cfg.samples_per_question)
    # what earlier runs already spent counts against this run's budget
    tokens = sum(s.usage.prompt_tokens + s.usage.completion_tokens for s in before)
    cost = sum(s.cost_usd for s in before)
    if is_proprietary(cfg):
        print(f"note: {TERMS_NOTICE}", file=sys.stderr)
    if todo:
        over_budget(cfg, tokens, cost)
        _generate(cfg, rd, todo, thash, tokens, cost)
    wanted = {q.id for q in questions}
    samples = [s for s in existing(rd, thash) if s.question_id in wanted]
    counts = {
        "questions": len(questions),
        "samples": len(samples),
        "resumed": len(done),
        "completion_tokens": sum(s.usage.completion_tokens for s in samples),
        "prompt_tokens": sum(s.usage.prompt_tokens for s in samples),
        "truncated": sum(s.finish_reason == "length" for s in samples),
        "errors": sum(bool(s.error) for s in samples),
        "reasoning_tokens": sum(s.usage.reasoning_tokens for s in samples),
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
        extra={"teacher": provenance(cfg, thash, samples)},
    )


def _generate(cfg: GenerateConfig, rd: RunDir, todo, thash: str, tokens: int, cost: float):
    """Ask the teacher for every pending sample, appending each batch as it arrives.
    Stops cleanly at the budget: what is on disk stays, a re-run continues."""
    if cfg.api == "completions" and cfg.provider not in ("hf", "openai"):
        raise UserError(f"generate.api=completions needs provider hf or openai, not {cfg.provider}")
    backend = make_backend(cfg)
    chats = [question_messages(q.problem) for q, _ in todo]
    stop = ANSWER_DONE if cfg.stop_at_answer else None
    params = SamplingParams(cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.seed, stop,
                            top_k=cfg.top_k)  # fmt: skip
    bar = tqdm(total=len(todo), desc="generate", unit="sample", dynamic_ncols=True)
    if cfg.api == "completions":  # the sample still records the question as a chat turn
        texts = [completion_prompt(q.problem) for q, _ in todo]
        stream = backend.generate_texts(texts, params)
    else:
        stream = backend.generate(chats, params)
    try:
        for batch in stream:
            recs = [to_sample(*todo[i], cfg, thash, chats[i], c) for i, c in batch]
            append_jsonl(rd.samples, recs)
            tokens += sum(r.usage.prompt_tokens + r.usage.completion_tokens for r in recs)
            cost += sum(r.cost_usd for r in recs)
            bar.update(len(batch))
            bar.set_postfix(
                tokens=tokens, usd=f"{cost:.4f}", errors=sum(bool(r.error) for r in recs)
            )
            over_budget(cfg, tokens, cost)
    finally:
        stream.close()  # cancels requests still in flight
        bar.close()


def over_budget(cfg: GenerateConfig, tokens: int, cost: float) -> None:
    if cfg.max_cost_usd is not None and cost >= cfg.max_cost_usd:
        raise UserError(
            f"budget reached: ${cost:.4f} spent of generate.max_cost_usd={cfg.max_cost_usd}; "
            "samples so far are saved: raise the cap and run again to continue"
        )
    if cfg.max_tokens is not None and tokens >= cfg.max_tokens:
        raise UserError(
            f"budget reached: {tokens} tokens of generate.max_tokens={cfg.max_tokens}; "
            "samples so far are saved: raise the cap and run again to continue"
        )
