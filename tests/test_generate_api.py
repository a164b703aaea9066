"""The generate stage with an API teacher: `protege serve` in a real subprocess, the
real `openai` SDK, budget caps, secrets kept out of files, and SIGKILL at several points."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from protege import evaluate, generate
from protege.answers import ANSWER_DONE
from protege.backends.base import SamplingParams
from protege.backends.openai_compat import OpenAIBackend
from protege.config import load_recipe
from protege.curate import stage as curate
from protege.errors import UserError
from protege.prompts import completion_prompt
from protege.records import EvalResult, Question, Sample, read_jsonl
from protege.rundir import RunDir

KEY = "sk-test-do-not-leak-123"


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "protege.cli",
            "serve",
            str(tiny_model_dir),
            "--port",
            "0",
            "--api-key",
            KEY,
            "--precision",
            "fp32",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stdout.readline()
    assert "protege serve:" in line, proc.stderr.read()
    yield line.split(" on ")[1].strip()
    proc.terminate()
    proc.wait(timeout=10)


def api_recipe(tmp_path, url, *extra):
    return load_recipe(
        None,
        [
            f"runs_dir={tmp_path}",
            "curate.n_eval=2",
            "curate.n_train=10",
            "generate.provider=openai",
            "generate.teacher=tiny",
            f"generate.base_url={url}",
            "generate.api_key_env=PROTEGE_TEST_KEY",
            "generate.samples_per_question=3",
            "generate.max_new_tokens=8",
            "generate.concurrency=3",
            *extra,
        ],
    )


def test_api_teacher_end_to_end_keeps_the_key_secret(tmp_path, server, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("PROTEGE_TEST_KEY", KEY)
    recipe = api_recipe(
        tmp_path,
        server,
        "generate.prices.tiny.input_per_mtok=1",
        "generate.prices.tiny.output_per_mtok=2",
    )
    rd = RunDir(recipe.run_root)
    curate.run(recipe, rd)
    m = generate.run(recipe, rd)
    samples = read_jsonl(rd.samples, Sample)
    assert m["counts"]["samples"] == 30 == len({(s.question_id, s.sample_idx) for s in samples})
    assert m["counts"]["errors"] == 0 and m["teacher"]["versions"] == [str(tiny_model_dir)]
    s = samples[0]
    expected = (s.usage.prompt_tokens * 1 + s.usage.completion_tokens * 2) / 1e6
    assert s.cost_usd == pytest.approx(expected) and s.cost_usd > 0
    assert m["cost"] == pytest.approx(sum(x.cost_usd for x in samples))
    # the API teacher is evaluated through its own backend, greedy, like the students
    recipe.eval.models, recipe.eval.max_new_tokens = ["teacher"], 8
    ev = evaluate.run(recipe, rd)
    results = read_jsonl(rd.eval_dir("teacher", "heldout") / "results.jsonl", EvalResult)
    assert ev["counts"]["n"] == 2 == len(results) and ev["counts"]["teacher_correct"] >= 0
    assert all(r.completion_tokens >= 1 and r.model == "teacher" for r in results)
    for path in rd.root.rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(errors="ignore"), path


def test_raw_completions_mode(tmp_path, server, monkeypatch):
    monkeypatch.setenv("PROTEGE_TEST_KEY", KEY)
    recipe = api_recipe(tmp_path, server, "generate.api=completions")
    rd = RunDir(recipe.run_root)
    curate.run(recipe, rd)
    m = generate.run(recipe, rd)
    assert m["counts"]["samples"] == 30 and m["counts"]["errors"] == 0
    assert all(s.usage.completion_tokens > 0 for s in read_jsonl(rd.samples, Sample))
    # eval asks the teacher the way generate did: a raw prompt to /v1/completions
    recipe.eval.models, recipe.eval.max_new_tokens = ["teacher"], 6
    evaluate.run(recipe, rd)
    results = read_jsonl(rd.eval_dir("teacher", "heldout") / "results.jsonl", EvalResult)
    questions = {q.id: q for q in read_jsonl(rd.eval_questions, Question)}
    backend = OpenAIBackend("tiny", base_url=server, api_key=KEY)
    raw = [completion_prompt(questions[r.question_id].problem) for r in results]
    params = SamplingParams(temperature=0.0, max_new_tokens=6, stop_regex=ANSWER_DONE)
    direct = {i: c.text for b in backend.generate_texts(raw, params) for i, c in b}
    assert [r.output for r in results] == [direct[i] for i in range(len(results))]
    bad = api_recipe(tmp_path, server, "generate.api=completions", "generate.provider=anthropic")
    with pytest.raises(UserError, match="needs provider hf or openai"):
        generate.run(bad, rd)


def test_budget_cap_stops_cleanly_and_resumes(tmp_path, server, monkeypatch):
    monkeypatch.setenv("PROTEGE_TEST_KEY", KEY)
    extra = ["generate.prices.tiny.input_per_mtok=1000", "generate.concurrency=1"]
    capped = api_recipe(tmp_path, server, *extra, "generate.max_cost_usd=0.5")
    rd = RunDir(capped.run_root)
    curate.run(capped, rd)
    with pytest.raises(UserError, match="budget reached"):
        generate.run(capped, rd)
    partial = read_jsonl(rd.samples, Sample)
    assert 0 < len(partial) < 30 and not rd.manifest("generate").exists()
    with pytest.raises(UserError, match="budget reached"):  # still over: asks nothing
        generate.run(capped, rd)
    assert len(read_jsonl(rd.samples, Sample)) == len(partial)
    m = generate.run(api_recipe(tmp_path, server, *extra), rd)  # cap lifted
    keys = [(s.question_id, s.sample_idx) for s in read_jsonl(rd.samples, Sample)]
    assert len(keys) == 30 == len(set(keys)) and m["counts"]["resumed"] == len(partial)


def test_missing_key_for_a_remote_api(tmp_path, monkeypatch):
    monkeypatch.delenv("PROTEGE_TEST_KEY", raising=False)
    recipe = api_recipe(tmp_path, "https://api.example.com/v1")
    rd = RunDir(recipe.run_root)
    curate.run(recipe, rd)
    with pytest.raises(UserError, match=r"no API key: set \$PROTEGE_TEST_KEY"):
        generate.run(recipe, rd)


def test_sigkill_at_several_points_loses_and_duplicates_nothing(tmp_path, server):
    args = [
        f"runs_dir={tmp_path}",
        "curate.n_eval=2",
        "curate.n_train=40",
        "generate.provider=openai",
        "generate.teacher=tiny",
        f"generate.base_url={server}",
        "generate.api_key_env=PROTEGE_TEST_KEY",
        "generate.samples_per_question=4",
        "generate.max_new_tokens=24",
        "generate.concurrency=2",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PROTEGE_TEST_KEY": KEY}
    cmd = [sys.executable, "-m", "protege.cli"]
    subprocess.run([*cmd, "curate", "-", *args], env=env, check=True, capture_output=True)
    samples = tmp_path / "quickstart" / "02-generate" / "samples.jsonl"

    def count():
        return len(samples.read_text().splitlines()) if samples.exists() else 0

    kills = 0
    for threshold in (10, 50, 100):
        proc = subprocess.Popen(
            [*cmd, "generate", "-", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while count() < threshold and proc.poll() is None:
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2
    done = subprocess.run([*cmd, "generate", "-", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    keys = [
        (r["question_id"], r["sample_idx"])
        for r in map(json.loads, samples.read_text().splitlines())
    ]
    assert len(keys) == 160 == len(set(keys))
