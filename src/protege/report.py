"""The report stage: one markdown page with what the run cost and what it gained: the
data funnel, the teacher's accuracy and tokens, the training loss and the accuracy table.
Every number is read from the stages' manifests and result files, none is recomputed."""

from __future__ import annotations

import json
import math
import os
import time

from protege.config import Recipe
from protege.records import EvalResult, read_jsonl
from protege.rundir import (
    STAGES,
    RunDir,
    hash_config,
    invalidate,
    is_fresh,
    read_manifest,
    write_manifest,
)

LABELS = {"teacher": "teacher", "student": "student (untrained)", "trained": "student (trained)"}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def accuracy_table(evals: dict) -> list[str]:
    rows = ["| model | accuracy | correct / n |", "|---|---:|---:|"]
    for label, m in evals.items():
        rows.append(
            f"| {LABELS.get(label, label)} | {_pct(m['accuracy'])} | {m['correct']} / {m['n']} |"
        )
    if "student" in evals and "trained" in evals:
        gain = evals["trained"]["accuracy"] - evals["student"]["accuracy"]
        rows.append(f"| **gain from training** | **{100 * gain:+.1f} pts** | |")
    return rows


def mcnemar(before: dict[str, bool], after: dict[str, bool]) -> tuple[int, int, float]:
    """(questions fixed, questions broken, two-sided exact McNemar p) for paired results:
    is the change in accuracy more than the noise of which questions flip?"""
    fixed = sum(1 for q, ok in after.items() if ok and not before.get(q, False))
    broken = sum(1 for q, ok in after.items() if not ok and before.get(q, False))
    n, k = fixed + broken, min(fixed, broken)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return fixed, broken, p


def significance(rd: RunDir) -> list[str]:
    paths = [rd.eval_dir(m, "heldout") / "results.jsonl" for m in ("student", "trained")]
    if not all(p.exists() for p in paths):
        return []
    before, after = ({r.question_id: r.correct for r in read_jsonl(p, EvalResult)} for p in paths)
    fixed, broken, p = mcnemar(before, after)
    verdict = "beyond noise" if p < 0.05 else "within noise"
    return [
        "",
        f"Trained vs untrained student on the same questions: {fixed} fixed, {broken} broken; "
        f"exact McNemar p = {p:.3g} ({verdict} at p < 0.05).",
    ]


def loss_summary(rd: RunDir) -> tuple[float | None, float | None]:
    if not rd.train_metrics.exists():
        return None, None
    losses = [
        r["loss"] for r in map(json.loads, rd.train_metrics.read_text().splitlines()) if "loss" in r
    ]
    return (losses[0], losses[-1]) if losses else (None, None)


def funnel(c: dict) -> list[str]:
    gen, ver = c["generate"], c["verify"]
    kept = f"{ver.get('kept', 0)} ({ver.get('questions_with_kept', 0)} questions)"
    rows = [
        ("questions loaded", c["curate"].get("loaded", 0)),
        ("duplicates removed", c["curate"].get("duplicates", 0)),
        ("held out for evaluation", c["curate"].get("eval", 0)),
        ("sent to the teacher", gen.get("questions", 0)),
        ("teacher samples", gen.get("samples", 0)),
        ("correct samples", ver.get("correct", 0)),
        ("kept for training", kept),
    ]
    return ["| step | count |", "|---|---:|", *[f"| {k} | {v} |" for k, v in rows]]


def teacher(c: dict, cost: float) -> list[str]:
    gen, ver = c["generate"], c["verify"]
    n = gen.get("samples", 0)
    acc = _pct(ver.get("correct", 0) / n) if n else "n/a"
    return [
        f"- sample accuracy: {acc} (of {n} samples)",
        f"- tokens: {gen.get('prompt_tokens', 0)} prompt, "
        f"{gen.get('completion_tokens', 0)} completion",
        f"- samples cut at max_new_tokens: {gen.get('truncated', 0)}",
        f"- cost: ${cost:.4f}",
        f"- rejected by reason: {ver.get('rejected_by_reason', {})}",
    ]


def training(rd: RunDir, trn: dict, seconds: float) -> list[str]:
    first, last = loss_summary(rd)
    return [
        f"- {trn.get('examples', 0)} examples, {trn.get('steps', 0)} steps, {seconds:.0f} s",
        f"- loss: {first:.3f} (first log) -> {last:.3f} (last log)"
        if first is not None
        else "- loss: n/a",
    ]


def render(recipe: Recipe, rd: RunDir, manifests: dict, evals: dict) -> str:
    c = {s: (manifests.get(s) or {}).get("counts", {}) for s in STAGES}
    secs = {s: (manifests.get(s) or {}).get("seconds", 0.0) for s in STAGES}
    cost = (manifests.get("generate") or {}).get("cost", 0.0)
    times = [f"| {s} | {secs[s]:.1f} |" for s in STAGES if s != "report"]
    return "\n".join(
        [
            f"# {recipe.report.title}: `{recipe.name}`",
            "",
            f"Teacher `{recipe.generate.teacher}`, student `{recipe.train.student}`.",
            *["", "## Data funnel", "", *funnel(c)],
            *["", "## Teacher", "", *teacher(c, cost)],
            *["", "## Training", "", *training(rd, c["train"], secs["train"])],
            *["", "## Held-out accuracy (greedy)", "", *accuracy_table(evals)],
            *significance(rd),
            *["", "## Time", "", "| stage | seconds |", "|---|---:|", *times, ""],
        ]
    )


def run(recipe: Recipe, rd: RunDir, force: bool = False) -> dict | None:
    manifests = {s: read_manifest(rd, s) for s in STAGES if s != "report"}
    inputs = [rd.manifest(s) for s in STAGES if s != "report" and manifests[s]]
    chash = hash_config(recipe.report.model_dump(mode="json"))
    if not force and is_fresh(rd, "report", chash, inputs):
        return None
    invalidate(rd, "report")
    t0 = time.perf_counter()
    evals = {}
    for label in recipe.eval.models:
        path = rd.eval_dir(label, "heldout") / "metrics.json"
        if path.exists():
            evals[label] = json.loads(path.read_text())
    out = rd.stage("report") / "report.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name("report.md.tmp")
    tmp.write_text(render(recipe, rd, manifests, evals))
    os.replace(tmp, out)
    return write_manifest(
        rd,
        "report",
        config_hash=chash,
        inputs=inputs,
        outputs=[out],
        counts={k: v["accuracy"] for k, v in evals.items()},
        seconds=time.perf_counter() - t0,
    )
