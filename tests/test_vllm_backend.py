"""vLLM cannot run here (no GPU): the request and result mapping is tested against a
small stand-in `vllm` module with the same surface (LLM.chat, SamplingParams)."""

import sys
import types
from dataclasses import dataclass, field

import pytest

from protege.backends.base import SamplingParams
from protege.backends.vllm_offline import VLLMBackend, group


@dataclass
class FakeSP:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    seed: int | None = None
    stop: list | None = None
    ignore_eos: bool = False
    top_k: int = -1


@dataclass
class FakeLLM:
    model: str
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    seed: int = 0
    calls: list = field(default_factory=list)

    def chat(self, prompts, sps, use_tqdm=True):
        self.calls.append((prompts, sps))
        outs = []
        for p, sp in zip(prompts, sps, strict=True):
            content = p[-1]["content"]
            outputs = [
                types.SimpleNamespace(
                    text=f"{content}#{k}",
                    token_ids=[1] * (k + 2),
                    finish_reason="length" if k == 2 else "stop",
                )
                for k in range(sp.n)
            ]
            outs.append(types.SimpleNamespace(prompt_token_ids=[0] * len(content), outputs=outputs))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    mod = types.ModuleType("vllm")
    mod.LLM, mod.SamplingParams = FakeLLM, FakeSP
    monkeypatch.setitem(sys.modules, "vllm", mod)
    return mod


def test_identical_prompts_are_one_request_with_n(fake_vllm, tiny_model_dir):
    backend = VLLMBackend(str(tiny_model_dir), tensor_parallel_size=4, precision="bf16", chunk=1)
    assert (backend.llm.model, backend.llm.tensor_parallel_size, backend.llm.dtype) == (
        str(tiny_model_dir),
        4,
        "bfloat16",
    )
    a, b = [{"role": "user", "content": "aa"}], [{"role": "user", "content": "bbb"}]
    chats = [a, b, a, a, b]
    params = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=33, seed=5, stop=("\n\n",))
    batches = list(backend.generate(chats, params))
    assert len(batches) == 2  # chunk=1: one unique prompt per vLLM call
    out = dict(pair for batch in batches for pair in batch)
    assert sorted(out) == [0, 1, 2, 3, 4]
    assert [out[i].text for i in (0, 2, 3)] == ["aa#0", "aa#1", "aa#2"]
    assert [out[i].text for i in (1, 4)] == ["bbb#0", "bbb#1"]
    assert out[3].finish_reason == "length" and out[0].finish_reason == "stop"
    assert (out[0].prompt_tokens, out[3].completion_tokens) == (2, 4)
    sp = backend.llm.calls[0][1][0]
    assert (sp.n, sp.temperature, sp.top_p, sp.max_tokens, sp.seed, sp.stop) == (
        3,
        0.7,
        0.9,
        33,
        5,
        ["\n\n"],
    )
    assert sp.top_k == -1  # vLLM's "all tokens"; protege's is 0


def test_group_keeps_order():
    assert list(group([[1], [2], [1]]).values()) == [[0, 2], [1]]


def test_missing_vllm_is_a_clear_error(monkeypatch):
    from protege.errors import UserError

    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(UserError, match=r"protege\[gpu\]"):
        VLLMBackend("smollm2-135m")
