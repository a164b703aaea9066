"""The dataset card (`03-verify/README.md`) written with every training set: where the
data came from, what was kept and why, and the terms it comes with."""

from __future__ import annotations

import os
import time

from protege import __version__
from protege.config import Recipe
from protege.rundir import RunDir, read_manifest

TERMS = (
    "Using a proprietary model's outputs to train another model may violate that "
    "provider's terms of service. Check the teacher's terms before training on or "
    "publishing this dataset."
)


def teacher_lines(rd: RunDir, recipe: Recipe) -> list[str]:
    t = (read_manifest(rd, "generate") or {}).get("teacher") or {}
    p = t.get("params", {})
    return [
        f"- provider: {t.get('provider', recipe.generate.provider)}",
        f"- model: `{t.get('model', recipe.generate.teacher)}`"
        + (f" (reported versions: {', '.join(t['versions'])})" if t.get("versions") else ""),
        f"- sampling: temperature {p.get('temperature')}, top_p {p.get('top_p')}, "
        f"max_new_tokens {p.get('max_new_tokens')}, {p.get('samples_per_question')} per question",
        f"- generated: {t.get('date', 'unknown')}; teacher config hash `{t.get('hash', '')}`",
    ]


def write_card(rd: RunDir, recipe: Recipe, counts: dict, sources: list) -> None:
    v = recipe.verify
    rows = [
        f"| {src} | {dom} | {n} | {ok} | {100 * ok / n:.1f}% | {kept} |"
        for src, dom, n, ok, kept in sources
    ]
    lines = [
        "---", "license: other", "task_categories:", "- text-generation",
        "tags:", "- distillation", "- reasoning", "- protege", "---", "",
        f"# Distilled reasoning traces: `{recipe.name}`", "",
        f"Made by protege {__version__} on {time.strftime('%Y-%m-%d', time.gmtime())} by "
        "rejection sampling: teacher answers were kept only when they verified against the "
        "gold answer.", "",
        "## Teacher", "", *teacher_lines(rd, recipe), "",
        "## Funnel", "",
        "| questions | samples | correct | kept | questions with a kept trace |",
        "|---:|---:|---:|---:|---:|",
        f"| {counts['questions']} | {counts['samples']} | {counts['correct']} | "
        f"{counts['kept']} | {counts['questions_with_kept']} |", "",
        f"Rejected, by reason: {counts['rejected_by_reason']}", "",
        "## Accuracy by source and domain", "",
        "| source | domain | samples | correct | accuracy | kept |",
        "|---|---|---:|---:|---:|---:|",
        *rows, "",
        "## Format", "",
        "`train.jsonl` (and the `hf/` folder, for `datasets.load_from_disk`): one record per "
        "trace, OpenAI-style `messages`; the assistant turn is the reasoning inside "
        f"`{v.think_open or '(none)'}` ... `{v.think_close or '(none)'}`, then the answer. "
        f"Answers checked with kind `{v.kind}`, keep policy `{v.keep}`."
        + (f" Samples no gold answer could check were graded by an LLM judge: "
           f"`{v.judge.teacher}` ({v.judge.provider})." if v.judge else "")
        + (f" {counts.get('reformatted', 0)} kept traces were rewritten into the template by "
           f"`{v.reformat.teacher}` ({v.reformat.provider}) and re-verified."
           if v.reformat else ""), "",
        "## Licence and terms", "",
        "The questions keep the licence of their sources. The traces are the teacher's "
        f"outputs. {TERMS}", "",
    ]  # fmt: skip
    out = rd.stage("verify") / "README.md"
    tmp = out.with_name("README.md.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, out)
