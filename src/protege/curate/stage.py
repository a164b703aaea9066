"""The curate stage: a source of questions in, `questions.jsonl` (for the teacher) and
`eval_questions.jsonl` (held out, never shown to the teacher or the student) out."""

from __future__ import annotations

import hashlib
import random
import re
import time
from pathlib import Path

from protege.answers import gold_answer
from protege.config import CurateConfig, Recipe
from protege.curate import synthetic
from protege.errors import UserError
from protege.records import Question, iter_jsonl, write_jsonl
from protege.rundir import RunDir, hash_config, invalidate, is_fresh, write_manifest


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def question_id(problem: str) -> str:
    """Stable id: a hash of the normalized problem text."""
    return hashlib.sha256(normalize(problem).lower().encode()).hexdigest()[:16]


def load_synthetic(cfg: CurateConfig) -> list[Question]:
    return [
        Question(
            id=question_id(p["problem"]),
            problem=p["problem"],
            answer=p["answer"],
            domain="arithmetic",
            source="synthetic",
            meta={"level": p["level"], "steps": p["steps"]},
        )
        for p in synthetic.generate(cfg.pool, list(cfg.levels), cfg.seed)
    ]


def load_jsonl(cfg: CurateConfig) -> list[Question]:
    if not cfg.path:
        raise UserError("curate.source=jsonl needs curate.path")
    path, fm = Path(cfg.path), cfg.fields
    out = []
    for line, obj in iter_jsonl(path):
        if not isinstance(obj.get(fm.problem), str) or not obj[fm.problem].strip():
            raise UserError(f"{path}:{line}: missing or empty field {fm.problem!r}")
        answer = obj.get(fm.answer) if fm.answer else None
        if isinstance(answer, list):
            answer = [gold_answer(str(a), fm.answer_format) for a in answer]
        elif answer is not None:
            answer = gold_answer(str(answer), fm.answer_format)
        qid = str(obj[fm.id]) if fm.id and obj.get(fm.id) is not None else None
        problem = normalize(obj[fm.problem])
        out.append(
            Question(
                id=qid or question_id(problem),
                problem=problem,
                answer=answer,
                domain=obj.get("subject") or obj.get("domain"),
                source=path.stem if path.stem not in ("train", "test") else path.parent.name,
                meta={"line": line, **({"tests": obj[fm.tests]} if fm.tests in obj else {})},
            )
        )
    return out


def dedupe(questions: list[Question]) -> list[Question]:
    """Exact dedupe on normalized text, keeping the first occurrence."""
    seen, out = set(), []
    for q in questions:
        key = normalize(q.problem).lower()
        if key not in seen:
            seen.add(key)
            out.append(q)
    return out


def split(questions: list[Question], n_train: int, n_eval: int, seed: int):
    """Shuffle deterministically, hold out n_eval first, then select up to n_train."""
    if len(questions) <= n_eval:
        raise UserError(
            f"only {len(questions)} unique questions: need more than n_eval={n_eval} "
            "to leave any for training"
        )
    order = list(questions)
    random.Random(seed).shuffle(order)
    return order[n_eval : n_eval + n_train], order[:n_eval]


def run(recipe: Recipe, rd: RunDir, force: bool = False) -> dict | None:
    cfg = recipe.curate
    inputs = [Path(cfg.path)] if cfg.source == "jsonl" and cfg.path else []
    chash = hash_config(cfg.model_dump(mode="json"))
    if not force and is_fresh(rd, "curate", chash, inputs):
        return None
    invalidate(rd, "curate")
    t0 = time.perf_counter()
    loaded = load_synthetic(cfg) if cfg.source == "synthetic" else load_jsonl(cfg)
    unique = dedupe(loaded)
    train, held_out = split(unique, cfg.n_train, cfg.n_eval, cfg.seed)
    write_jsonl(rd.questions, train)
    write_jsonl(rd.eval_questions, held_out)
    counts = {
        "loaded": len(loaded),
        "duplicates": len(loaded) - len(unique),
        "train": len(train),
        "eval": len(held_out),
    }
    return write_manifest(
        rd,
        "curate",
        config_hash=chash,
        inputs=inputs,
        outputs=[rd.questions, rd.eval_questions],
        counts=counts,
        seconds=time.perf_counter() - t0,
    )
