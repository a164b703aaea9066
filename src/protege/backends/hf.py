"""Local transformers generation, batched: prompts sorted by length so each batch pads
little, left padding so every row's new tokens start at the same column, bf16 where the
hardware supports it (about 2x fp32 on these CPUs)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace

from protege.backends.base import Completion, SamplingParams
from protege.models import load_model
from protege.prompts import render_chat


class HFBackend:
    def __init__(self, model_ref: str, precision: str = "auto", batch_size: int = 32,
                 max_batch_tokens: int | None = None):  # fmt: skip
        self.model_ref = model_ref
        self.batch_size, self.max_batch_tokens = batch_size, max_batch_tokens
        self.model, self.tokenizer = load_model(model_ref, precision)
        self.tokenizer.padding_side = "left"

    def generate(
        self, chats: Sequence[list[dict[str, str]]], params: SamplingParams
    ) -> Iterator[list[tuple[int, Completion]]]:
        """Yield, batch by batch, (index into `chats`, completion) pairs. Callers persist
        each batch as it arrives, so an interrupted run loses at most one batch."""
        texts = [render_chat(self.tokenizer, c) for c in chats]
        for batch in self.generate_texts(texts, params):
            yield [(i, replace(c, text=c.text.strip())) for i, c in batch]

    def generate_texts(
        self, texts: Sequence[str], params: SamplingParams
    ) -> Iterator[list[tuple[int, Completion]]]:
        """The same for raw prompts, continued token-exactly (no chat template)."""
        lengths = [len(self.tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
        batches = plan_batches(lengths, self.batch_size, self.max_batch_tokens,
                               params.max_new_tokens)  # fmt: skip
        for b, idx in enumerate(batches):
            yield list(zip(idx, self._batch([texts[i] for i in idx], params, b), strict=True))

    def _kwargs(self, params: SamplingParams, b: int, prompt_len: int) -> dict:
        import torch

        kwargs = {"do_sample": params.temperature > 0, "max_new_tokens": params.max_new_tokens}
        if params.temperature > 0:
            torch.manual_seed(params.seed + b)  # reproducible for the same batching
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        patterns = [f"(?:{params.stop_regex})"] if params.stop_regex else []
        patterns += [re.escape(x) for x in params.stop if x]
        if patterns:
            stop = _RegexStop("|".join(patterns), self.tokenizer, prompt_len)
            kwargs["stopping_criteria"] = [stop]
        return kwargs

    def _batch(self, texts: list[str], params: SamplingParams, b: int) -> list[Completion]:
        import torch

        tok = self.tokenizer
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(self.model.device)
        kwargs = self._kwargs(params, b, enc.input_ids.shape[1])
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                **enc, **kwargs, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
            )  # (B, T_prompt + T_new)
        dt = time.perf_counter() - t0
        new = out[:, enc.input_ids.shape[1] :]  # (B, T_new)
        results = []
        for row, mask in zip(new, enc.attention_mask, strict=True):
            hit_eos = (row == tok.eos_token_id).nonzero()
            n = int(hit_eos[0, 0]) + 1 if len(hit_eos) else int((row != tok.pad_token_id).sum())
            text, cut = _cut_at_stop(tok.decode(row[:n], skip_special_tokens=True), params.stop)
            stopped = len(hit_eos) > 0 or n < params.max_new_tokens or cut
            finish = "stop" if stopped else "length"
            results.append(Completion(text, finish, int(mask.sum()), n, dt))
        return results


def plan_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None,
                 max_new_tokens: int) -> list[list[int]]:  # fmt: skip
    """Prompts sorted by length, cut into batches of at most `batch_size` rows and, when
    `max_batch_tokens` is set, at most that many padded tokens (rows x (longest prompt +
    max_new_tokens)): many short prompts share a batch, long ones get smaller batches."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        cur = batches[-1] if batches else None
        fits = cur is not None and len(cur) < batch_size
        if fits and max_batch_tokens is not None:
            fits = (len(cur) + 1) * (lengths[i] + max_new_tokens) <= max_batch_tokens
        if fits:
            cur.append(i)
        else:
            batches.append([i])
    return batches


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Text up to the earliest stop string (excluded, as the OpenAI API does)."""
    hits = [i for i in (text.find(x) for x in stops if x) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


class _RegexStop:
    """Per-row stopping criterion: a row is done once the tail of its new text matches.
    transformers pads finished rows from then on, and stops when all rows are done."""

    def __init__(self, pattern: str, tokenizer, prompt_len: int, tail_tokens: int = 24):
        import re

        self.pattern = re.compile(pattern, re.IGNORECASE)
        self.tok, self.prompt_len, self.tail = tokenizer, prompt_len, tail_tokens

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        tails = self.tok.batch_decode(
            input_ids[:, max(self.prompt_len, input_ids.shape[1] - self.tail) :],
            skip_special_tokens=True,
        )
        done = [bool(self.pattern.search(t)) for t in tails]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
