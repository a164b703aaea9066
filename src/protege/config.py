"""One pydantic model per stage, composed into a `Recipe`. Unknown keys are errors.

`Field(description=...)` is the one place each setting is documented.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protege.errors import UserError
from protege.rundir import hash_config

Precision = Literal["auto", "bf16", "fp32"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldMap(StrictModel):
    problem: str = Field("question", description="source field holding the problem text")
    answer: str | None = Field("answer", description="source field holding the gold answer")
    id: str | None = Field(None, description="source field holding a stable id, if any")
    tests: str | None = Field(None, description="source field holding test code (coding tasks)")
    answer_format: Literal["plain", "gsm8k", "boxed"] = Field(
        "plain", description="how the gold answer is written: plain, GSM8K '#### N', \\boxed{}"
    )


class CurateConfig(StrictModel):
    source: Literal["synthetic", "jsonl"] = Field(
        "synthetic", description="where questions come from"
    )
    path: str | None = Field(None, description="JSONL file of questions when source=jsonl")
    fields: FieldMap = Field(default_factory=FieldMap, description="field mapping for source=jsonl")
    levels: list[Literal[1, 2, 3]] = Field([1, 2], description="synthetic difficulty levels to mix")
    pool: int = Field(400, gt=0, description="synthetic problems to draw before dedupe and split")
    n_train: int = Field(96, gt=0, description="questions selected for the teacher")
    n_eval: int = Field(96, ge=0, description="held-out questions for evaluation")
    seed: int = Field(0, description="seed for generation, shuffling and the split")


class Price(StrictModel):
    input_per_mtok: float = Field(0.0, ge=0, description="USD per million prompt tokens")
    output_per_mtok: float = Field(0.0, ge=0, description="USD per million completion tokens")
    reasoning_per_mtok: float | None = Field(
        None, ge=0, description="USD per million reasoning tokens (default: the output price)"
    )


# Settings that change how fast or how safely samples are collected, not what they are:
# changing them must not invalidate samples already paid for.
OPERATIONAL = {
    "batch_size", "max_batch_tokens", "tensor_parallel_size", "concurrency", "requests_per_minute",
    "tokens_per_minute", "timeout_s", "max_retries", "prices", "max_cost_usd", "max_tokens",
    "api_key_env", "api_key_file",
}  # fmt: skip


class GenerateConfig(StrictModel):
    provider: Literal["hf", "vllm", "openai", "anthropic"] = Field(
        "hf",
        description="hf: local transformers; vllm: vLLM's offline engine (GPU); "
        "openai: any OpenAI-compatible endpoint; anthropic: the Messages API",
    )
    tensor_parallel_size: int = Field(1, gt=0, description="vllm: GPUs per model replica")
    api: Literal["chat", "completions"] = Field(
        "chat", description="hf/openai: chat messages, or a plain-text prompt continued as is"
    )
    teacher: str = Field("smollm2-135m", description="model alias, local HF dir, .gguf or HF id")
    samples_per_question: int = Field(4, gt=0, description="teacher attempts per question")
    temperature: float = Field(0.7, ge=0, description="sampling temperature (0 = greedy)")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling threshold")
    top_k: int = Field(
        0,
        ge=0,
        description="sample from the k most likely tokens only (0 = all): hf, vllm, and "
        "OpenAI-compatible servers that accept it (vLLM, SGLang, llama.cpp; not OpenAI's API)",
    )
    max_new_tokens: int = Field(256, gt=0, description="generation length cap per sample")
    batch_size: int = Field(64, gt=0, description="hf: rows decoded together at most")
    max_batch_tokens: int | None = Field(
        None,
        gt=0,
        description="hf: cap on rows x (longest prompt + max_new_tokens), for mixed lengths",
    )
    precision: Precision = Field("auto", description="auto = bf16 where supported")
    seed: int = Field(0, description="sampling seed")
    stop_at_answer: bool = Field(
        True, description="end a sample once it states its final answer (verify drops the rest)"
    )
    base_url: str | None = Field(None, description="openai: endpoint, e.g. http://host:8000/v1")
    api_key_env: str | None = Field(
        None, description="env var holding the key (default OPENAI_API_KEY / ANTHROPIC_API_KEY)"
    )
    api_key_file: str | None = Field(None, description="file holding the API key instead")
    concurrency: int = Field(16, gt=0, description="API requests in flight at once")
    thinking_budget: int = Field(
        0, ge=0, description="anthropic: extended-thinking token budget (0 = off)"
    )
    requests_per_minute: float | None = Field(None, gt=0, description="client-side RPM limit")
    tokens_per_minute: float | None = Field(None, gt=0, description="client-side TPM limit")
    timeout_s: float = Field(600.0, gt=0, description="per-request timeout")
    max_retries: int = Field(8, ge=0, description="retries of a retryable failure")
    prices: dict[str, Price] = Field(
        default_factory=dict, description="price table: model name -> per-token prices"
    )
    max_cost_usd: float | None = Field(None, gt=0, description="stop (resumably) at this spend")
    max_tokens: int | None = Field(None, gt=0, description="stop (resumably) at these tokens")

    def teacher_hash(self) -> str:
        """What makes two samples interchangeable: the model and its sampling settings,
        not the operational settings (speed, limits, budget) in OPERATIONAL."""
        return hash_config(self.model_dump(mode="json", exclude=OPERATIONAL))


class VerifyConfig(StrictModel):
    kind: Literal["auto", "math", "numeric", "exact", "code"] = Field(
        "auto",
        description="answer equivalence: auto (numeric or math-verify), math, numeric, exact; "
        "code runs the last code block against the question's meta.tests in a sandbox",
    )
    tolerance: float = Field(1e-6, ge=0, description="relative/absolute numeric tolerance")
    workers: int = Field(0, ge=0, description="grading processes (0 = one per core)")
    timeout_s: float = Field(10.0, gt=0, description="per-sample grading time limit")
    think_open: str = Field("<think>", description="opening think delimiter in training examples")
    think_close: str = Field("</think>", description="closing think delimiter in training examples")
    keep: Literal["all", "shortest", "longest", "first"] = Field(
        "all", description="which correct samples to keep per question"
    )
    min_tokens: int = Field(0, ge=0, description="reject samples with fewer completion tokens")
    max_tokens: int | None = Field(
        None, gt=0, description="reject samples with more completion tokens"
    )
    max_per_question: int | None = Field(None, gt=0, description="cap on kept samples per question")
    implicit_answers: bool = Field(
        True,
        description="accept a finished sample that never states its answer when the last "
        "number in it is right; its training example then ends with answer_template",
    )
    judge: GenerateConfig | None = Field(
        None,
        description="an LLM judge (a teacher section: provider, teacher = the judge model, "
        "base_url, ...) for samples whose answer cannot be checked against a gold answer",
    )
    reformat: GenerateConfig | None = Field(
        None,
        description="rewrite kept traces through a teacher into one template (Sky-T1 style); "
        "a rewrite is used only if it still verifies",
    )
    answer_template: str = Field(
        "The answer is {answer}.", description="how an implicit answer is stated in training"
    )


class TrainConfig(StrictModel):
    student: str = Field("smollm2-135m", description="model to fine-tune (alias, dir or HF id)")
    epochs: float = Field(3, gt=0, description="passes over the training set")
    learning_rate: float = Field(3e-5, gt=0, description="peak learning rate")
    batch_size: int = Field(8, gt=0, description="examples per optimizer step (per device)")
    grad_accum: int = Field(1, gt=0, description="gradient accumulation steps")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="fraction of steps warming up")
    max_length: int = Field(512, gt=0, description="truncate examples to this many tokens")
    precision: Precision = Field("auto", description="auto = bf16 autocast where supported")
    seed: int = Field(0, description="training seed")


class EvalConfig(StrictModel):
    models: list[Literal["teacher", "student", "trained"]] = Field(
        ["teacher", "student", "trained"], description="which models to evaluate"
    )
    max_new_tokens: int = Field(256, gt=0, description="generation cap (greedy)")
    batch_size: int = Field(64, gt=0, description="prompts per batch")
    precision: Precision = Field("auto", description="auto = bf16 where supported")
    stop_at_answer: bool = Field(
        True, description="end an answer once it states its final answer (grading ignores the rest)"
    )


class ReportConfig(StrictModel):
    title: str = Field("protege run report", description="heading of report.md")


class Recipe(StrictModel):
    name: str = Field("quickstart", description="run name: the folder under runs_dir")
    runs_dir: str = Field("runs", description="where run folders are created")
    curate: CurateConfig = Field(default_factory=CurateConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @property
    def run_root(self) -> Path:
        return Path(self.runs_dir) / self.name


def apply_override(data: dict[str, Any], override: str) -> None:
    """`train.epochs=2` sets data['train']['epochs'] = 2 (value parsed as YAML)."""
    if "=" not in override:
        raise UserError(f"override {override!r} is not key.sub=value")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise UserError(f"override {override!r}: {p!r} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


def format_validation_error(err: ValidationError, source: str) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        msg = f"{source}: unknown key {loc!r}"
    else:
        msg = f"{source}: {loc}: {e['msg']}"
    return msg + (f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else "")


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> Recipe:
    """Read a YAML recipe (or defaults when path is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise UserError(f"{p}: no such recipe file")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise UserError(f"{p}: a recipe is a mapping of sections, got {type(data).__name__}")
    for o in overrides:
        apply_override(data, o)
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise UserError(format_validation_error(e, str(path or "recipe"))) from None


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
