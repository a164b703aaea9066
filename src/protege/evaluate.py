"""The eval stage: greedy accuracy of the teacher, the untrained student and the trained
student on the held-out questions. Per-question results are appended batch by batch, so
a killed evaluation resumes where it stopped; `metrics.json` is written when a model's
evaluation is complete. A teacher behind an API or vLLM is evaluated through its own
backend (the generate config, at temperature 0); local models through the hf backend."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tqdm import tqdm

from protege.answers import ANSWER_DONE, grade, split_reasoning
from protege.backends.base import SamplingParams
from protege.config import Recipe
from protege.errors import UserError
from protege.prompts import completion_prompt, question_messages
from protege.records import EvalResult, Question, append_jsonl, read_jsonl, repair_jsonl
from protege.rundir import (
    RunDir,
    hash_config,
    invalidate,
    is_fresh,
    sha256_path,
    write_manifest,
)

BENCH = "heldout"


def model_refs(recipe: Recipe, rd: RunDir) -> dict[str, str]:
    """Label -> model reference for each model the recipe asks to evaluate."""
    refs = {"teacher": recipe.generate.teacher, "student": recipe.train.student}
    refs["trained"] = str(rd.model)
    return {label: refs[label] for label in recipe.eval.models}


def score(output: str, gold: str | None) -> tuple[str | None, bool]:
    """Grade the answer part of an output (after a think block, from the first answer
    statement on); with no explicit answer, fall back to the whole text."""
    _, response = split_reasoning(output)
    g = grade(response or output, gold)
    return g.extracted, bool(g.correct)


def summarize(results: list[EvalResult]) -> dict:
    n = len(results)
    correct = sum(r.correct for r in results)
    return {
        "n": n,
        "correct": correct,
        "accuracy": round(correct / n, 4) if n else 0.0,
        "mean_completion_tokens": round(sum(r.completion_tokens for r in results) / max(n, 1), 1),
        "truncated": sum(r.finish_reason == "length" for r in results),
    }


def source(recipe: Recipe, label: str, ref: str) -> tuple[str, str]:
    """Where a model runs: ("hf", ref) locally, or (provider, ref) for a teacher that
    generate reaches through an API or vLLM."""
    provider = recipe.generate.provider
    return (provider, ref) if label == "teacher" and provider != "hf" else ("hf", ref)


def run_key(src: tuple[str, str], recipe: Recipe) -> str:
    """Identifies what produced a result: the model's weights (hashed for a local
    directory, which a re-run of training overwrites; for a remote teacher, its provider,
    endpoint and name) and the evaluation settings."""
    provider, ref = src
    if provider == "hf":
        from protege.models import resolve

        resolved = resolve(ref)
        weights = sha256_path(resolved) if Path(resolved).is_dir() else str(resolved)
    else:
        g = recipe.generate
        weights = f"{provider}:{g.api}:{g.base_url or ''}:{ref}"
    return hash_config({"weights": weights, "eval": recipe.eval.model_dump(mode="json")})


def make_eval_backend(recipe: Recipe, src: tuple[str, str]):
    provider, ref = src
    if provider != "hf":
        from protege.backends import make_backend

        return make_backend(recipe.generate)
    from protege.backends.hf import HFBackend

    return HFBackend(ref, recipe.eval.precision, recipe.eval.batch_size)


def load_done(path: Path, key: str) -> dict[str, EvalResult]:
    """Results already on disk for this exact model and settings; results from other
    weights (a retrained student) are stale and are discarded."""
    if not path.exists():
        return {}
    repair_jsonl(path)
    results = read_jsonl(path, EvalResult)
    if any(r.run_key != key for r in results):
        path.unlink()
        return {}
    return {r.question_id: r for r in results}


def evaluate_model(recipe: Recipe, label: str, src, key: str, questions, out: Path) -> dict:
    """Evaluate one model, resuming from `out/results.jsonl`; returns its metrics."""
    cfg = recipe.eval
    results_path = out / "results.jsonl"
    done = load_done(results_path, key)
    todo = [q for q in questions if q.id not in done]
    if todo:
        backend = make_eval_backend(recipe, src)
        stop = ANSWER_DONE if cfg.stop_at_answer else None
        params = SamplingParams(temperature=0.0, max_new_tokens=cfg.max_new_tokens, stop_regex=stop)
        if src[0] != "hf" and recipe.generate.api == "completions":  # as generate asked it
            stream = backend.generate_texts([completion_prompt(q.problem) for q in todo], params)
        else:
            stream = backend.generate([question_messages(q.problem) for q in todo], params)
        bar = tqdm(total=len(todo), desc=f"eval {label}", unit="q", dynamic_ncols=True)
        failed: list[str] = []
        for batch in stream:
            failed += [f"{c.error_class}: {c.error}" for _, c in batch if c.error]
            recs = [_result(todo[i], label, key, c) for i, c in batch if not c.error]
            append_jsonl(results_path, recs)
            done.update((r.question_id, r) for r in recs)
            bar.update(len(batch))
        bar.close()
        if failed:  # not scored as wrong: a re-run asks again
            raise UserError(
                f"eval {label}: {len(failed)} of {len(todo)} requests failed (first: "
                f"{failed[0]}); the other results are saved: run again to retry"
            )
    wanted = [done[q.id] for q in questions]
    metrics = {"model": label, "ref": src[1], "bench": BENCH, **summarize(wanted)}
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    os.replace(tmp, out / "metrics.json")
    return metrics


def _result(q: Question, label: str, key: str, c) -> EvalResult:
    extracted, ok = score(c.text, q.answer)
    return EvalResult(
        question_id=q.id,
        model=label,
        bench=BENCH,
        output=c.text,
        extracted=extracted,
        gold=q.answer,
        correct=ok,
        completion_tokens=c.completion_tokens,
        finish_reason=c.finish_reason,
        latency_s=round(c.latency_s, 4),
        run_key=key,
    )


def run(recipe: Recipe, rd: RunDir, force: bool = False) -> dict | None:
    refs = model_refs(recipe, rd)
    chash = hash_config({"eval": recipe.eval.model_dump(mode="json"), "refs": refs})
    inputs = [rd.eval_questions] + ([rd.model] if "trained" in refs else [])
    if not force and is_fresh(rd, "eval", chash, inputs):
        return None
    invalidate(rd, "eval")
    t0 = time.perf_counter()
    questions = read_jsonl(rd.eval_questions, Question)
    srcs = {label: source(recipe, label, ref) for label, ref in refs.items()}
    # one weights hash per distinct model (teacher and student are often the same)
    keys = {src: run_key(src, recipe) for src in set(srcs.values())}
    metrics, outputs, by_src = {}, [], {}
    for label, src in srcs.items():
        out = rd.eval_dir(label, BENCH)
        out.mkdir(parents=True, exist_ok=True)
        if src in by_src:  # same model under two labels (self-distillation): evaluate once
            _copy_results(by_src[src], out, label)
        metrics[label] = evaluate_model(recipe, label, src, keys[src], questions, out)
        by_src.setdefault(src, out)
        outputs += [out / "results.jsonl", out / "metrics.json"]
    counts = {f"{label}_accuracy": m["accuracy"] for label, m in metrics.items()}
    counts |= {f"{label}_correct": m["correct"] for label, m in metrics.items()}
    counts["n"] = len(questions)
    return write_manifest(
        rd,
        "eval",
        config_hash=chash,
        inputs=inputs,
        outputs=outputs,
        counts=counts,
        seconds=time.perf_counter() - t0,
    )


def _copy_results(src: Path, dst: Path, label: str) -> None:
    results = read_jsonl(src / "results.jsonl", EvalResult)
    path = dst / "results.jsonl"
    path.unlink(missing_ok=True)
    append_jsonl(path, [r.model_copy(update={"model": label}) for r in results])
