import json

import pytest

from protege import train
from protege.config import load_recipe
from protege.records import TrainExample, write_jsonl
from protege.rundir import RunDir


def examples(n: int) -> list[TrainExample]:
    return [
        TrainExample(
            question_id=f"q{i}",
            sample_idx=0,
            messages=[
                {"role": "system", "content": "You are a careful math tutor."},
                {"role": "user", "content": f"Mia has {i} apples. Then she buys 5 more apples."},
                {
                    "role": "assistant",
                    "content": f"<think>\n{i} + 5 = {i + 5}\n</think>\n\nThe answer is {i + 5}.",
                },
            ],
        )
        for i in range(n)
    ]


@pytest.fixture
def setup(tmp_path, tiny_model_dir):
    recipe = load_recipe(
        None,
        [
            f"runs_dir={tmp_path}",
            f"train.student={tiny_model_dir}",
            "train.epochs=2",
            "train.batch_size=4",
            "train.precision=fp32",
            "train.learning_rate=1e-3",
        ],
    )
    rd = RunDir(recipe.run_root)
    write_jsonl(rd.train_set, examples(8))
    return recipe, rd


def test_loss_covers_the_completion_only(setup, tmp_path):
    recipe, _ = setup
    trainer = train.build_trainer(recipe, examples(2), tmp_path / "out")
    row = trainer.train_dataset[0]
    tok = trainer.processing_class
    ids, labels = row["input_ids"], row["labels"]  # TRL masks the prompt to -100
    completion = tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab != -100])
    prompt = tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab == -100])
    assert completion.startswith("<think>\n0 + 5 = 5") and "<|im_end|>" in completion
    assert "Mia has 0 apples" in prompt and "The answer" not in prompt


def test_train_stage_resumes_from_a_checkpoint(setup, monkeypatch):
    recipe, rd = setup
    real = train._metrics_callback

    def crash_after_first_save(path, step):
        cb = real(path, step)

        def on_save(args, state, control, **kw):
            raise RuntimeError("killed")

        cb.on_save = on_save
        return cb

    monkeypatch.setattr(train, "_metrics_callback", crash_after_first_save)
    with pytest.raises(RuntimeError, match="killed"):
        train.run(recipe, rd)
    assert not rd.manifest("train").exists() and not rd.model.exists()
    assert train.last_checkpoint(rd.stage("train") / "checkpoints").name == "checkpoint-2"
    monkeypatch.setattr(train, "_metrics_callback", real)

    m = train.run(recipe, rd)
    assert m["counts"] == {**m["counts"], "examples": 8, "steps": 4, "resumed_from_step": 2}
    assert (rd.model / "config.json").exists() and (rd.model / "tokenizer.json").exists()
    assert not (rd.stage("train") / "checkpoints").exists()
    rows = [json.loads(x) for x in rd.train_metrics.read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == [1, 2, 3, 4]  # logged once each, across the crash
    assert "train_runtime" in rows[-1]
    assert train.run(recipe, rd) is None  # up to date
