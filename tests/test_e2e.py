"""The whole pipeline on the real embedded model at a tiny size: killed mid-generation
with SIGKILL (plus a torn line, as a crash mid-write leaves), resumed, then run again
to check that nothing is redone. Marked slow; CI runs it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

OVERRIDES = [
    "name=e2e",
    "curate.levels=[1]",
    "curate.n_train=12",
    "curate.n_eval=8",
    "generate.samples_per_question=4",
    "generate.max_new_tokens=64",
    "generate.batch_size=8",
    "train.epochs=1",
    "train.batch_size=8",
    "eval.max_new_tokens=64",
    "eval.batch_size=8",
]
RUN_FILES = {
    "recipe.yaml",
    "01-curate/questions.jsonl",
    "01-curate/eval_questions.jsonl",
    "01-curate/manifest.json",
    "02-generate/samples.jsonl",
    "02-generate/manifest.json",
    "03-verify/kept.jsonl",
    "03-verify/rejected.jsonl",
    "03-verify/train.jsonl",
    "03-verify/manifest.json",
    "03-verify/README.md",
    "04-train/metrics.jsonl",
    "04-train/manifest.json",
    *(
        f"05-eval/{m}/heldout/{f}"
        for m in ("teacher", "student", "trained")
        for f in ("results.jsonl", "metrics.json")
    ),
    "05-eval/manifest.json",
    "06-report/report.md",
    "06-report/manifest.json",
}


def cmd(tmp_path):
    args = [sys.executable, "-m", "protege.cli", "run", str(ROOT / "recipes" / "quickstart.yaml")]
    return args + [f"runs_dir={tmp_path / 'runs'}", *OVERRIDES]


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_pipeline_killed_resumed_and_skipped(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = tmp_path / "runs" / "e2e"
    samples = run / "02-generate" / "samples.jsonl"
    proc = subprocess.Popen(
        cmd(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.time() + 600
    while lines(samples) < 8 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = lines(samples)
    assert 8 <= before < 48
    with samples.open("a") as f:
        f.write('{"question_id": "torn')  # a crash in mid-write

    done = subprocess.run(cmd(tmp_path), env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[curate] up to date, skipped" in done.stdout
    assert "student (trained)" in done.stdout and "report: " in done.stdout

    files = snapshot(run)
    dirs = ("04-train/model/", "03-verify/hf/")
    assert {f for f in files if not f.startswith(dirs)} == RUN_FILES
    assert "03-verify/hf/dataset_info.json" in files
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        f.split("/")[-1] for f in files if f.startswith("04-train/model/")
    }
    keys = [
        (r["question_id"], r["sample_idx"])
        for r in map(json.loads, samples.read_text().splitlines())
    ]
    assert len(keys) == 48 and len(set(keys)) == 48  # nothing lost, nothing duplicated

    m = {
        s: json.loads((run / d / "manifest.json").read_text())["counts"]
        for s, d in [
            ("curate", "01-curate"),
            ("generate", "02-generate"),
            ("verify", "03-verify"),
            ("train", "04-train"),
            ("eval", "05-eval"),
        ]
    }
    assert m["curate"] == {"loaded": 400, "duplicates": 0, "train": 12, "eval": 8}
    assert m["generate"]["samples"] == 48 and m["generate"]["resumed"] == before
    assert m["verify"]["kept"] + m["verify"]["rejected"] == 48 and m["verify"]["kept"] > 0
    assert m["train"]["examples"] == m["verify"]["kept"]
    assert m["eval"]["n"] == 8
    assert m["eval"]["teacher_correct"] == m["eval"]["student_correct"]  # same model, once

    again = subprocess.run(cmd(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    assert again.stdout.count("up to date, skipped") == 6
    assert snapshot(run) == files  # not one file rewritten
