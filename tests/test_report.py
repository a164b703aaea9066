import json

from protege import report
from protege.config import Recipe
from protege.records import EvalResult, append_jsonl
from protege.rundir import RunDir, write_manifest


def test_mcnemar_exact():
    before = {f"q{i}": False for i in range(10)}
    after = {**before, "q0": True, "q1": True}
    assert report.mcnemar(before, after) == (2, 0, 0.5)  # 2 flips alone: not significant
    after = {f"q{i}": True for i in range(10)}
    fixed, broken, p = report.mcnemar(before, after)
    assert (fixed, broken) == (10, 0) and abs(p - 2 / 1024) < 1e-12
    assert report.mcnemar(before, before) == (0, 0, 1.0)


def result(qid, model, ok):
    return EvalResult(
        question_id=qid,
        model=model,
        bench="heldout",
        output="",
        extracted=None,
        gold="1",
        correct=ok,
        completion_tokens=1,
        finish_reason="stop",
        latency_s=0.0,
        run_key="k",
    )


def test_report_reads_manifests_and_results(tmp_path):
    recipe = Recipe(runs_dir=str(tmp_path))
    rd = RunDir(recipe.run_root)
    counts = {
        "curate": {"loaded": 50, "duplicates": 2, "train": 20, "eval": 8},
        "generate": {
            "questions": 20,
            "samples": 80,
            "completion_tokens": 900,
            "prompt_tokens": 700,
            "truncated": 3,
        },
        "verify": {"correct": 20, "kept": 18, "questions_with_kept": 12},
    }
    for stage, c in counts.items():
        out = rd.stage(stage) / "x"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("x")
        write_manifest(rd, stage, config_hash="h", inputs=[], outputs=[out], counts=c, seconds=1)
    accs = {"teacher": 0.5, "student": 0.25, "trained": 0.75}
    for label, acc in accs.items():
        d = rd.eval_dir(label, "heldout")
        d.mkdir(parents=True)
        n_ok = int(acc * 8)
        (d / "metrics.json").write_text(json.dumps({"accuracy": acc, "correct": n_ok, "n": 8}))
        append_jsonl(d / "results.jsonl", [result(f"q{i}", label, i < n_ok) for i in range(8)])
    m = report.run(recipe, rd)
    text = (rd.stage("report") / "report.md").read_text()
    assert m["counts"] == accs
    assert "| kept for training | 18 (12 questions) |" in text
    assert "sample accuracy: 25.0% (of 80 samples)" in text
    assert "| student (trained) | 75.0% | 6 / 8 |" in text
    assert "**+50.0 pts**" in text and "4 fixed, 0 broken" in text
    assert report.run(recipe, rd) is None
