"""Teacher generation on the embedded model, measured in one run (machines are shared
and noisy: only the ratios mean much). Prints one line per figure:

(a) equal work: every prompt gets exactly --tokens new tokens; the hf backend against
    the naive one-prompt-at-a-time `model.generate` loop people write first;
(b) a sampling workload like the quickstart's (--questions questions x 4 samples,
    T=0.5, up to 128 tokens, each row ending at its own end of turn): the hf backend
    (continuous batching, each distinct prompt prefilled once) against `model.generate`
    on static batches of the same size, sorted by length (what the backend did before).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/generate.py [--prompts 64] [--tokens 64]
"""

from __future__ import annotations

import argparse
import time

import torch

from protege.backends.base import SamplingParams
from protege.backends.hf import HFBackend
from protege.curate.synthetic import generate as synthetic
from protege.models import load_model
from protege.prompts import question_messages, render_chat


def naive(model, tok, chats, max_new_tokens: int) -> tuple[int, float]:
    """The loop people write first: one prompt, one `generate` call, no batching."""
    tokens, t0 = 0, time.perf_counter()
    for chat in chats:
        enc = tok(render_chat(tok, chat), return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(
                **enc,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                min_new_tokens=max_new_tokens,
                pad_token_id=tok.pad_token_id,
            )
        tokens += out.shape[1] - enc.input_ids.shape[1]
    return tokens, time.perf_counter() - t0


def batched(backend: HFBackend, chats, max_new_tokens: int) -> tuple[int, float]:
    params = SamplingParams(max_new_tokens=max_new_tokens, ignore_eos=True)  # equal work
    tokens, t0 = 0, time.perf_counter()
    for batch in backend.generate(chats, params):
        tokens += sum(c.completion_tokens for _, c in batch)
    return tokens, time.perf_counter() - t0


def static_batches(model, tok, chats, params: SamplingParams, size: int) -> tuple[int, float]:
    """`model.generate` on fixed batches: a batch runs until its longest row is done."""
    texts = sorted((render_chat(tok, c) for c in chats), key=len)
    tok.padding_side = "left"
    tokens, t0 = 0, time.perf_counter()
    for start in range(0, len(texts), size):
        enc = tok(texts[start : start + size], return_tensors="pt", padding=True,
                  add_special_tokens=False)  # fmt: skip
        torch.manual_seed(params.seed + start)
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=True, temperature=params.temperature,
                                 top_p=1.0, max_new_tokens=params.max_new_tokens,
                                 pad_token_id=tok.pad_token_id)  # fmt: skip
        new = out[:, enc.input_ids.shape[1] :]  # (B, T_new)
        for row in new:  # tokens up to and including the end of turn
            eos = (row == tok.eos_token_id).nonzero()
            tokens += int(eos[0, 0]) + 1 if len(eos) else len(row)
    return tokens, time.perf_counter() - t0


def workload(backend: HFBackend, questions: int, size: int) -> None:
    problems = [p["problem"] for p in synthetic(questions, [1], 1)]
    chats = [question_messages(p) for p in problems for _ in range(4)]
    params = SamplingParams(temperature=0.5, max_new_tokens=128, seed=0)
    s_tok, s_s = static_batches(backend.model, backend.tokenizer, chats, params, size)
    c_tok, t0 = 0, time.perf_counter()
    for batch in backend.generate(chats, params):
        c_tok += sum(c.completion_tokens for _, c in batch)
    c_s = time.perf_counter() - t0
    print(f"sampling workload ({len(chats)} rows): model.generate static batches "
          f"{s_tok / s_s:.1f} tokens/s, hf backend {c_tok / c_s:.1f} tokens/s, "
          f"{(c_tok / c_s) / (s_tok / s_s):.2f}x")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=64, help="prompts for the batched run")
    ap.add_argument("--naive-prompts", type=int, default=4, help="prompts for the naive loop")
    ap.add_argument("--tokens", type=int, default=64, help="new tokens per prompt")
    ap.add_argument("--questions", type=int, default=32, help="questions for (b); 0 skips it")
    args = ap.parse_args()
    chats = [question_messages(p["problem"]) for p in synthetic(args.prompts, [1, 2], 0)]
    backend = HFBackend(args.model, "auto", batch_size=args.prompts)
    batched(backend, chats[:2], 4)  # warm-up
    # the naive baseline as people write it: from_pretrained defaults (fp32), batch 1
    plain, tok = load_model(args.model, "fp32")
    n_tok, n_s = naive(plain, tok, chats[: args.naive_prompts], args.tokens)
    del plain
    b_tok, b_s = batched(backend, chats, args.tokens)
    print(f"naive loop (fp32, batch 1): {n_tok / n_s:.1f} tokens/s")
    print(f"hf backend ({backend.model.dtype}, batch {args.prompts}): {b_tok / b_s:.1f} tokens/s")
    print(f"batched / naive: {(b_tok / b_s) / (n_tok / n_s):.1f}x")
    if args.questions:
        workload(backend, args.questions, args.prompts)


if __name__ == "__main__":
    main()
