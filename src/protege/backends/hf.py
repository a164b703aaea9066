"""Local transformers generation with continuous batching (see `decode.py`): prompts
sorted by length, a shared prefix and repeated prompts prefilled once, finished rows
replaced by pending ones, bf16 where the hardware supports it (about 2x fp32 on these
CPUs)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

from protege.backends.base import Completion, SamplingParams
from protege.backends.decode import check_model, decode
from protege.models import load_model
from protege.prompts import render_chat


class HFBackend:
    def __init__(self, model_ref: str, precision: str = "auto", batch_size: int = 32,
                 max_batch_tokens: int | None = None):  # fmt: skip
        self.model_ref = model_ref
        self.batch_size, self.max_batch_tokens = batch_size, max_batch_tokens
        self.model, self.tokenizer = load_model(model_ref, precision)
        check_model(self.model)  # at load time, not at the first request
        gen_eos = self.model.generation_config.eos_token_id
        gen_eos = gen_eos if isinstance(gen_eos, list) else [gen_eos]
        self.eos_ids = {i for i in [self.tokenizer.eos_token_id, *gen_eos] if i is not None}

    def generate(
        self,
        chats: Sequence[list[dict[str, str]]],
        params: SamplingParams,
        on_text: Callable[[int, str], None] | None = None,
    ) -> Iterator[list[tuple[int, Completion]]]:
        """Yield (index into `chats`, completion) pairs as rows finish. Callers persist
        each list as it arrives, so an interrupted run loses only rows in flight."""
        texts = [render_chat(self.tokenizer, c) for c in chats]
        for done in self.generate_texts(texts, params, on_text):
            yield [(i, replace(c, text=c.text.strip())) for i, c in done]

    def generate_texts(
        self,
        texts: Sequence[str],
        params: SamplingParams,
        on_text: Callable[[int, str], None] | None = None,
    ) -> Iterator[list[tuple[int, Completion]]]:
        """The same for raw prompts, continued token-exactly (no chat template).
        `on_text(index, text so far)` is called after every decoding step (streaming)."""
        tok = self.tokenizer
        prompts = [tok(t, add_special_tokens=False).input_ids for t in texts]
        detok = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731
        on_step = None
        if on_text is not None:
            on_step = lambda idx, new: [on_text(i, detok(n)) for i, n in zip(idx, new, strict=True)]  # noqa: E731
        rows = decode(self.model, prompts, params, batch_size=self.batch_size,
                      eos_ids=self.eos_ids, max_batch_tokens=self.max_batch_tokens,
                      detok=detok, on_step=on_step)  # fmt: skip
        for finished in rows:
            out = []
            for f in finished:
                text, cut = _cut_at_stop(detok(f.tokens), params.stop)
                reason = "stop" if cut else f.finish_reason
                c = Completion(text, reason, len(prompts[f.index]), len(f.tokens), f.latency_s)
                out.append((f.index, c))
            yield out


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Text up to the earliest stop string (excluded, as the OpenAI API does)."""
    hits = [i for i in (text.find(x) for x in stops if x) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)
