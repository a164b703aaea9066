"""The train stage: supervised fine-tuning of the student on the verified traces with
TRL's `SFTTrainer`. Examples become conversational prompt/completion records, so the loss
covers the assistant turn (and its end-of-turn token) only. Checkpoints each epoch let a
killed run resume; the final model is written to a temporary folder and renamed into
place, so `model/` is always whole."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from protege.config import Recipe
from protege.errors import UserError
from protege.records import TrainExample, read_jsonl
from protege.rundir import RunDir, hash_config, invalidate, is_fresh, write_manifest


def to_prompt_completion(ex: TrainExample) -> dict:
    """All turns before the final assistant turn are the prompt; that turn is the completion."""
    if not ex.messages or ex.messages[-1]["role"] != "assistant":
        raise UserError(
            f"training example {ex.question_id}/{ex.sample_idx}: no final assistant turn"
        )
    return {"prompt": ex.messages[:-1], "completion": [ex.messages[-1]]}


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    ckpts = [p for p in ckpt_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[1]), default=None)


def _metrics_callback(path: Path, resume_step: int):
    from transformers import TrainerCallback

    # Keep what was logged up to the checkpoint we resume from; later lines get redone.
    kept = []
    if path.exists() and resume_step:
        kept = [ln for ln in path.read_text().splitlines() if json.loads(ln)["step"] <= resume_step]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(ln + "\n" for ln in kept))

    class MetricsLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            row = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), **(logs or {})}
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")

    return MetricsLog()


def sft_config(recipe: Recipe, out_dir: Path, n_examples: int):
    from trl import SFTConfig

    from protege.models import pick_dtype

    cfg = recipe.train
    import torch

    bf16 = pick_dtype(cfg.precision) == torch.bfloat16
    steps_per_epoch = max(1, -(-n_examples // (cfg.batch_size * cfg.grad_accum)))
    return SFTConfig(
        output_dir=str(out_dir),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,  # < 1 is read as a fraction of all steps
        max_length=cfg.max_length,
        completion_only_loss=True,
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        logging_steps=max(1, steps_per_epoch // 4),
        save_strategy="epoch",
        save_total_limit=1,
        save_only_model=False,
        report_to="none",
        seed=cfg.seed,
        disable_tqdm=False,
        dataloader_num_workers=0,
    )


def build_trainer(recipe: Recipe, examples: list[TrainExample], out_dir: Path, callbacks=()):
    """An SFTTrainer over prompt/completion records: loss on the completion only."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    from protege.models import load_tokenizer, quiet_transformers, resolve

    quiet_transformers()
    cfg = recipe.train
    tok = load_tokenizer(cfg.student)
    model = AutoModelForCausalLM.from_pretrained(resolve(cfg.student))
    data = Dataset.from_list([to_prompt_completion(e) for e in examples])
    return SFTTrainer(
        model=model,
        args=sft_config(recipe, out_dir, len(examples)),
        train_dataset=data,
        processing_class=tok,
        callbacks=list(callbacks),
    )


def train_model(recipe: Recipe, rd: RunDir, examples: list[TrainExample]) -> dict:
    stage = rd.stage("train")
    ckpt_dir = stage / "checkpoints"
    resume = last_checkpoint(ckpt_dir)
    resume_step = int(resume.name.split("-")[1]) if resume else 0
    log = _metrics_callback(rd.train_metrics, resume_step)
    trainer = build_trainer(recipe, examples, ckpt_dir, [log])
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    tmp = stage / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    trainer.processing_class.save_pretrained(str(tmp))
    shutil.rmtree(rd.model, ignore_errors=True)
    os.replace(tmp, rd.model)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return {
        "steps": trainer.state.global_step,
        "train_loss": round(result.training_loss, 4),
        "resumed_from_step": resume_step,
    }


def run(recipe: Recipe, rd: RunDir, force: bool = False) -> dict | None:
    cfg = recipe.train
    chash = hash_config(cfg.model_dump(mode="json"))
    if not force and is_fresh(rd, "train", chash, [rd.train_set]):
        return None
    invalidate(rd, "train")
    t0 = time.perf_counter()
    examples = read_jsonl(rd.train_set, TrainExample)
    if not examples:
        raise UserError(
            f"{rd.train_set}: no verified examples to train on; the teacher got nothing right "
            "(try more samples_per_question, easier questions or a stronger teacher)"
        )
    stats = train_model(recipe, rd, examples)
    return write_manifest(
        rd,
        "train",
        config_hash=chash,
        inputs=[rd.train_set],
        outputs=[rd.model, rd.train_metrics],
        counts={"examples": len(examples), **stats},
        seconds=time.perf_counter() - t0,
    )
