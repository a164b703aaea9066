import json

import pytest

from protege.config import load_recipe
from protege.curate import stage
from protege.errors import UserError
from protege.records import Question, read_jsonl
from protege.rundir import RunDir


def run_curate(tmp_path, *overrides):
    recipe = load_recipe(None, [f"runs_dir={tmp_path}", *overrides])
    rd = RunDir(recipe.run_root)
    return recipe, rd, stage.run(recipe, rd)


def test_synthetic_split_is_disjoint_and_resumable(tmp_path):
    recipe, rd, m = run_curate(tmp_path, "curate.n_train=30", "curate.n_eval=20")
    train = read_jsonl(rd.questions, Question)
    held = read_jsonl(rd.eval_questions, Question)
    assert (len(train), len(held)) == (30, 20)
    assert not {q.id for q in train} & {q.id for q in held}
    assert m["counts"] == {"loaded": 400, "duplicates": 0, "train": 30, "eval": 20}
    assert stage.run(recipe, rd) is None  # unchanged: skipped
    assert (
        stage.run(
            recipe.model_copy(update={"curate": recipe.curate.model_copy(update={"seed": 1})}), rd
        )
        is not None
    )


def test_gsm8k_with_field_mapping(tmp_path, shared_data):
    path = shared_data / "gsm8k" / "test.jsonl"
    _, rd, m = run_curate(
        tmp_path,
        "curate.source=jsonl",
        f"curate.path={path}",
        "curate.fields.answer_format=gsm8k",
        "curate.n_train=10",
        "curate.n_eval=5",
    )
    qs = read_jsonl(rd.questions, Question)
    assert len(qs) == 10 and all(q.answer and "####" not in q.answer for q in qs)
    assert all(float(q.answer.replace(",", "")) == float(q.answer.replace(",", "")) for q in qs)
    assert m["counts"]["loaded"] == 1319
    assert str(path) in m["inputs"]


def test_dedupe_and_bad_lines(tmp_path):
    src = tmp_path / "q.jsonl"
    rows = [
        {"question": "What is 1+1?", "answer": "2"},
        {"question": "what is  1+1?", "answer": "2"},
        {"question": "What is 2+2?", "answer": "4"},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, rd, m = run_curate(tmp_path, "curate.source=jsonl", f"curate.path={src}", "curate.n_eval=1")
    assert m["counts"]["duplicates"] == 1 and m["counts"]["train"] == 1
    src.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"q": "x"}) + "\n")
    with pytest.raises(UserError, match=r"q\.jsonl:2: missing or empty field 'question'"):
        run_curate(
            tmp_path, "curate.source=jsonl", f"curate.path={src}", "curate.n_eval=0", "name=other"
        )


def test_too_few_questions(tmp_path):
    with pytest.raises(UserError, match="only 400 unique questions"):
        run_curate(tmp_path, "curate.n_eval=400")
