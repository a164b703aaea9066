"""vLLM's offline engine (GPU extra: `pip install 'protege[gpu]'`), imported lazily so
nothing else needs it. Identical prompts (the n samples of one question) are sent once
with `n` outputs, which vLLM serves from one prefill."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence

from protege.backends.base import Completion, SamplingParams
from protege.errors import UserError
from protege.models import resolve


def group(chats: Sequence) -> dict[str, list[int]]:
    """Prompt (as canonical JSON) -> indices of the requests that ask it."""
    groups: dict[str, list[int]] = {}
    for i, chat in enumerate(chats):
        groups.setdefault(json.dumps(chat, sort_keys=True), []).append(i)
    return groups


class VLLMBackend:
    def __init__(self, model_ref: str, *, tensor_parallel_size: int = 1, precision: str = "auto",
                 chunk: int = 1024, seed: int = 0):  # fmt: skip
        try:
            import vllm
        except ImportError:
            raise UserError(
                "provider vllm needs the GPU extra: pip install 'protege[gpu]'"
            ) from None
        self.vllm, self.chunk = vllm, chunk
        dtype = {"auto": "auto", "bf16": "bfloat16", "fp32": "float32"}[precision]
        self.llm = vllm.LLM(
            model=str(resolve(model_ref)),
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            seed=seed,
        )

    def sampling(self, params: SamplingParams, n: int):
        return self.vllm.SamplingParams(
            n=n, temperature=params.temperature, top_p=params.top_p,
            max_tokens=params.max_new_tokens, seed=params.seed or None,
            stop=list(params.stop) or None, ignore_eos=params.ignore_eos,
            top_k=params.top_k or -1,
        )  # fmt: skip

    def generate(
        self, chats: Sequence[list[dict[str, str]]], params: SamplingParams
    ) -> Iterator[list[tuple[int, Completion]]]:
        """Yield completions chunk by chunk (vLLM schedules each chunk as one batch)."""
        groups = list(group(chats).values())
        for start in range(0, len(groups), self.chunk):
            part = groups[start : start + self.chunk]
            yield self._chunk([chats[g[0]] for g in part], part, params)

    def _chunk(self, prompts: list, part: list[list[int]], params: SamplingParams):
        # vLLM takes one SamplingParams per prompt when n differs between prompts
        sps = [self.sampling(params, len(g)) for g in part]
        t0 = time.perf_counter()
        outs = self.llm.chat(prompts, sps, use_tqdm=True)
        dt = time.perf_counter() - t0
        results = []
        for idx, out in zip(part, outs, strict=True):
            for i, o in zip(idx, out.outputs, strict=True):
                finish = "length" if o.finish_reason == "length" else "stop"
                results.append((i, Completion(o.text, finish, len(out.prompt_token_ids),
                                              len(o.token_ids), dt)))  # fmt: skip
        return results
