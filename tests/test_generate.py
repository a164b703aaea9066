import json

from protege import generate
from protege.config import load_recipe
from protege.curate import stage as curate
from protege.records import Sample, read_jsonl
from protege.rundir import RunDir


def setup(tmp_path, ref, *extra):
    recipe = load_recipe(
        None,
        [
            f"runs_dir={tmp_path}",
            "curate.n_eval=2",
            "curate.n_train=3",
            f"generate.teacher={ref}",
            "generate.samples_per_question=2",
            "generate.batch_size=2",
            "generate.max_new_tokens=8",
            "generate.precision=fp32",
            *extra,
        ],
    )
    rd = RunDir(recipe.run_root)
    curate.run(recipe, rd)
    return recipe, rd


def test_generate_resumes_without_loss_or_duplicates(tmp_path, tiny_model_dir):
    recipe, rd = setup(tmp_path, tiny_model_dir)
    m = generate.run(recipe, rd)
    assert m["counts"]["samples"] == 6 and m["counts"]["resumed"] == 0
    assert m["teacher"]["hash"] == recipe.generate.teacher_hash()
    full = read_jsonl(rd.samples, Sample)
    assert sorted((s.question_id, s.sample_idx) for s in full) == sorted(
        {(s.question_id, s.sample_idx) for s in full}
    )
    s = full[0]
    assert s.usage.completion_tokens > 0 and s.usage.prompt_tokens > 0 and s.latency_s > 0
    assert s.prompt[-1]["role"] == "user" and s.finish_reason in ("stop", "length")

    # a crash after two records, in the middle of writing the third
    lines = rd.samples.read_text().splitlines(keepends=True)
    rd.samples.write_text("".join(lines[:2]) + lines[2][:25])
    rd.manifest("generate").unlink()
    m = generate.run(recipe, rd)
    keys = [(s.question_id, s.sample_idx) for s in read_jsonl(rd.samples, Sample)]
    assert len(keys) == 6 and len(set(keys)) == 6 and m["counts"]["resumed"] == 2
    assert [json.loads(x)["question_id"] for x in lines[:2]] == [k[0] for k in keys[:2]]
    assert generate.run(recipe, rd) is None


def test_new_teacher_settings_sample_anew(tmp_path, tiny_model_dir):
    recipe, rd = setup(tmp_path, tiny_model_dir)
    generate.run(recipe, rd)
    hotter = recipe.model_copy(
        update={"generate": recipe.generate.model_copy(update={"temperature": 1.0})}
    )
    m = generate.run(hotter, rd)
    assert m["counts"]["samples"] == 6 and m["counts"]["resumed"] == 0
    assert len(read_jsonl(rd.samples, Sample)) == 12  # both settings kept, keyed by hash
