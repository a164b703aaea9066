"""The CLI as a user meets it: real subprocesses, one-line errors, non-zero exits."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT


def protege(*args, cwd, env_extra=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "protege.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_line_error(proc, pattern):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert pattern in lines[0], lines[0]


def test_missing_recipe_file(tmp_path):
    assert_one_line_error(
        protege("run", "nope.yaml", cwd=tmp_path), "nope.yaml: no such recipe file"
    )


def test_unknown_config_key(tmp_path):
    (tmp_path / "r.yaml").write_text("generate:\n  temprature: 0.5\n")
    assert_one_line_error(
        protege("run", "r.yaml", cwd=tmp_path), "unknown key 'generate.temprature'"
    )


def test_unknown_key_in_override(tmp_path):
    p = protege("curate", str(ROOT / "recipes" / "quickstart.yaml"), "curate.sed=1", cwd=tmp_path)
    assert_one_line_error(p, "unknown key 'curate.sed'")


def test_unknown_model_alias(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "curate:\n  n_train: 2\n  n_eval: 2\ngenerate:\n  teacher: gpt-17\n"
    )
    p = protege("run", "r.yaml", cwd=tmp_path)
    assert_one_line_error(p, "unknown model 'gpt-17'")
    # the stage before it finished and stays finished; nothing half-written after it
    assert (tmp_path / "runs/quickstart/01-curate/manifest.json").exists()
    assert not (tmp_path / "runs/quickstart/02-generate").exists()


def test_malformed_jsonl_source(tmp_path):
    src = tmp_path / "q.jsonl"
    src.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n{oops\n")
    p = protege("curate", "-", "curate.source=jsonl", f"curate.path={src}", cwd=tmp_path)
    assert_one_line_error(p, "q.jsonl:2: not valid JSON")


def test_debug_shows_the_traceback(tmp_path):
    p = protege("run", "nope.yaml", "--debug", cwd=tmp_path)
    assert p.returncode != 0 and "Traceback" in p.stderr


@pytest.mark.parametrize("cmd", ["run", "curate", "generate", "verify", "train", "eval", "report"])
def test_every_stage_has_a_subcommand(cmd, tmp_path):
    p = protege(cmd, "--help", cwd=tmp_path)
    assert p.returncode == 0 and "recipe" in p.stdout
