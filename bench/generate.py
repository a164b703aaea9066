"""Batched teacher generation vs a naive one-prompt-at-a-time `model.generate` loop, on
the embedded model, measured in one run (machines are shared and noisy: only the ratio
means much). Prints one line per figure.

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
    params = SamplingParams(max_new_tokens=max_new_tokens)
    backend.model.generation_config.min_new_tokens = max_new_tokens  # equal work per row
    tokens, t0 = 0, time.perf_counter()
    for batch in backend.generate(chats, params):
        tokens += sum(c.completion_tokens for _, c in batch)
    backend.model.generation_config.min_new_tokens = None
    return tokens, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=64, help="prompts for the batched run")
    ap.add_argument("--naive-prompts", type=int, default=4, help="prompts for the naive loop")
    ap.add_argument("--tokens", type=int, default=64, help="new tokens per prompt")
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


if __name__ == "__main__":
    main()
