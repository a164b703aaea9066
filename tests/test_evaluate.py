import shutil

import torch
from transformers import AutoModelForCausalLM

from protege import evaluate
from protege.config import load_recipe
from protege.curate import stage as curate
from protege.records import EvalResult, read_jsonl
from protege.rundir import RunDir


def test_score_uses_the_answer_statement():
    assert evaluate.score("<think>maybe 3</think>\n\nThe answer is 4.", "4") == ("4", True)
    assert evaluate.score("2 + 2 = 4\nThe answer is 4.\nThe answer is 5.", "4") == ("4", True)
    assert evaluate.score("she has 4 now", "4") == ("4", True)  # fallback: last number


def test_eval_stage_reuses_same_model_and_redoes_retrained(tmp_path, tiny_model_dir):
    ref = str(tiny_model_dir)
    recipe = load_recipe(
        None,
        [
            f"runs_dir={tmp_path}",
            "curate.n_eval=5",
            "curate.n_train=2",
            f"generate.teacher={ref}",
            f"train.student={ref}",
            "eval.max_new_tokens=6",
            "eval.precision=fp32",
        ],
    )
    rd = RunDir(recipe.run_root)
    curate.run(recipe, rd)
    shutil.copytree(tiny_model_dir, rd.model)

    m = evaluate.run(recipe, rd)
    assert m["counts"]["n"] == 5
    assert set(m["outputs"]) == {
        f"05-eval/{label}/heldout/{f}"
        for label in ("teacher", "student", "trained")
        for f in ("results.jsonl", "metrics.json")
    }
    teacher = read_jsonl(rd.eval_dir("teacher", "heldout") / "results.jsonl", EvalResult)
    student = read_jsonl(rd.eval_dir("student", "heldout") / "results.jsonl", EvalResult)
    assert [r.output for r in teacher] == [r.output for r in student]
    assert {r.model for r in student} == {"student"}
    before = read_jsonl(rd.eval_dir("trained", "heldout") / "results.jsonl", EvalResult)
    assert evaluate.run(recipe, rd) is None

    # "retrain": new weights in the same directory; old results must not be reused
    model = AutoModelForCausalLM.from_pretrained(rd.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.save_pretrained(rd.model)
    assert evaluate.run(recipe, rd) is not None
    after = read_jsonl(rd.eval_dir("trained", "heldout") / "results.jsonl", EvalResult)
    assert len(after) == 5 and {r.run_key for r in after} != {r.run_key for r in before}
