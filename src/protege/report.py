"""The report stage: one markdown page with what the run cost and what it gained: the
data funnel, the teacher's accuracy and tokens, the training loss and the accuracy table.
Every number is read from the stages' manifests and result files, none is recomputed."""

from __future__ import annotations

import json
import os
import time

from protege.config import Recipe
from protege.rundir import STAGES, RunDir, hash_config, invalidate, is_fresh, read_manifest
from protege.rundir import write_manifest

LABELS = {"teacher": "teacher", "student": "student (untrained)", "trained": "student (trained)"}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def accuracy_table(evals: dict) -> list[str]:
    rows = ["| model | accuracy | correct / n |", "|---|---:|---:|"]
    for label, m in evals.items():
        rows.append(f"| {LABELS.get(label, label)} | {_pct(m['accuracy'])} | {m['correct']} / {m['n']} |")
    if "student" in evals and "trained" in evals:
        gain = evals["trained"]["accuracy"] - evals["student"]["accuracy"]
        rows.append(f"| **gain from training** | **{100 * gain:+.1f} pts** | |")
    return rows


def loss_summary(rd: RunDir) -> tuple[float | None, float | None]:
    if not rd.train_metrics.exists():
        return None, None
    losses = [r["loss"] for r in map(json.loads, rd.train_metrics.read_text().splitlines()) if "loss" in r]
    return (losses[0], losses[-1]) if losses else (None, None)


def render(recipe: Recipe, rd: RunDir, manifests: dict, evals: dict) -> str:
    c = {s: (manifests.get(s) or {}).get("counts", {}) for s in STAGES}
    gen, ver, trn = c["generate"], c["verify"], c["train"]
    first, last = loss_summary(rd)
    secs = {s: (manifests.get(s) or {}).get("seconds", 0.0) for s in STAGES}
    samples = gen.get("samples", 0)
    lines = [
        f"# {recipe.report.title}: `{recipe.name}`", "",
        f"Teacher `{recipe.generate.teacher}`, student `{recipe.train.student}`.", "",
        "## Data funnel", "",
        "| step | count |", "|---|---:|",
        f"| questions loaded | {c['curate'].get('loaded', 0)} |",
        f"| duplicates removed | {c['curate'].get('duplicates', 0)} |",
        f"| held out for evaluation | {c['curate'].get('eval', 0)} |",
        f"| sent to the teacher | {gen.get('questions', 0)} |",
        f"| teacher samples | {samples} |",
        f"| correct samples | {ver.get('correct', 0)} |",
        f"| kept for training | {ver.get('kept', 0)} ({ver.get('questions_with_kept', 0)} questions) |",
        "", "## Teacher", "",
        f"- sample accuracy: {_pct(ver.get('correct', 0) / samples) if samples else 'n/a'}",
        f"- tokens: {gen.get('prompt_tokens', 0)} prompt, {gen.get('completion_tokens', 0)} completion",
        f"- cost: ${(manifests.get('generate') or {}).get('cost', 0.0):.4f}",
        f"- rejected by reason: {ver.get('rejected_by_reason', {})}",
        "", "## Training", "",
        f"- {trn.get('examples', 0)} examples, {trn.get('steps', 0)} steps, {secs['train']:.0f} s",
        f"- loss: {first if first is not None else 'n/a'} (first log) -> "
        f"{last if last is not None else 'n/a'} (last log)",
        "", "## Held-out accuracy (greedy)", "", *accuracy_table(evals), "",
        "## Time", "",
        "| stage | seconds |", "|---|---:|",
        *[f"| {s} | {secs[s]:.1f} |" for s in STAGES if s != "report"], "",
    ]  # fmt: skip
    return "\n".join(lines)


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
        rd, "report", config_hash=chash, inputs=inputs, outputs=[out],
        counts={k: v["accuracy"] for k, v in evals.items()}, seconds=time.perf_counter() - t0,
    )  # fmt: skip
