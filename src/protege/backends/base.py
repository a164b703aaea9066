"""What every backend returns for one request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" (end of turn) or "length" (hit max_new_tokens)
    prompt_tokens: int
    completion_tokens: int
    latency_s: float  # wall time of the call that produced it (a batch, for batched engines)
    reasoning: str | None = None  # from a separate field (reasoning_content, thinking blocks)
    reasoning_tokens: int = 0
    model: str | None = None  # the model version string the server reports
    error: str | None = None  # set when the request failed for good; text is then empty
    error_class: str | None = None  # rate_limit, server, timeout, connection, bad_request, ...
    attempts: int = 1


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    # End a sequence as soon as its text matches this regex (checked on the tail of the
    # new text). Used to stop once a final answer is stated: what follows is discarded.
    stop_regex: str | None = None
    stop: tuple[str, ...] = ()  # stop strings: generation ends there, the string excluded
    # Local engines only (hf, vllm): the end-of-turn token does not end a sample (stop
    # strings still do), so it runs to max_new_tokens (benchmarks).
    ignore_eos: bool = False
    top_k: int = 0  # sample from the k most likely tokens only; 0 = all
