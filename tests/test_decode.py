"""The continuous-batching decoder against transformers' own `generate`, one prompt at a
time: shared prefixes, repeated prompts, rows finishing early and pending prompts taking
their place must all be invisible in greedy output."""

import pytest
import torch

from protege.backends.base import SamplingParams
from protege.backends.decode import decode
from protege.errors import UserError
from protege.models import load_model
from protege.prompts import question_messages, render_chat

PROBLEMS = [
    "1+1?",
    "Mia has 12 apples. How many?",
    "What is 3*4?",
    "Tom has 5 coins and buys 7 more coins.",
    "2?",
    "Mia has 12 apples. How many?",  # a repeated prompt: prefilled once, sampled twice
    "Mia has 12 apples. Then she buys 5 more apples. How many apples does Mia have now?",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model, tok = load_model(str(tiny_model_dir), "fp32")
    prompts = [
        tok(render_chat(tok, question_messages(p)), add_special_tokens=False).input_ids
        for p in PROBLEMS
    ]
    return model, tok, prompts


def reference(model, prompt: list[int], max_new: int, eos: set[int]) -> list[int]:
    """transformers' generate, batch 1, greedy: the tokens up to and including an eos."""
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt]), do_sample=False, max_new_tokens=max_new,
            eos_token_id=sorted(eos), pad_token_id=0, temperature=None, top_p=None, top_k=None,
        )  # fmt: skip
    return out[0, len(prompt) :].tolist()


def run(model, prompts, params, batch_size, eos, **kw):
    steps: list[list[int]] = []
    out = {}
    for finished in decode(model, prompts, params, batch_size=batch_size, eos_ids=eos,
                           on_step=lambda idx, new: steps.append(idx), **kw):  # fmt: skip
        for f in finished:
            assert f.index not in out, "a prompt finished twice"
            out[f.index] = f
    assert sorted(out) == list(range(len(prompts)))
    return out, steps


def early_eos(model, prompts) -> set[int]:
    """An end token that greedy decoding hits early for some rows and late or never for
    others, so rows finish at different steps (random weights have no real eos)."""
    free, _ = run(model, prompts, SamplingParams(max_new_tokens=12), 8, set())
    first = {free[i].tokens[2] for i in range(len(prompts))}
    return {min(first, key=lambda t: sum(t in free[i].tokens for i in range(len(prompts))))}


@pytest.mark.parametrize("shared_prefix", [True, False])
def test_greedy_equals_transformers_generate_one_prompt_at_a_time(tiny, shared_prefix):
    model, _, prompts = tiny
    if not shared_prefix:  # rows start differently: no prefix pass, padding at column 0
        prompts = [p[i % 3 :] for i, p in enumerate(prompts)]
        assert len({p[0] for p in prompts}) > 1
    eos = early_eos(model, prompts)
    params = SamplingParams(max_new_tokens=12)
    out, steps = run(model, prompts, params, 3, eos)
    lengths = {len(f.tokens) for f in out.values()}
    assert len(lengths) > 1, "every row finished at the same step: the test proves nothing"
    for i, p in enumerate(prompts):
        assert out[i].tokens == reference(model, p, 12, eos), i
        want = "stop" if out[i].tokens[-1] in eos else "length"
        assert out[i].finish_reason == want
    assert max(len(s) for s in steps) <= 3
    # continuous: some step decodes a row admitted after another row of its batch finished
    first_seen = {}
    for n, idx in enumerate(steps):
        for i in idx:
            first_seen.setdefault(i, n)
    assert any(len({first_seen[i] for i in idx}) > 1 for idx in steps)


def test_repeated_prompts_and_shared_prefix_are_prefilled_once(tiny):
    model, _, prompts = tiny
    fed: list[int] = []
    hook = model.register_forward_pre_hook(
        lambda mod, args, kw: fed.append(kw["input_ids"].numel()), with_kwargs=True
    )
    try:
        run(model, prompts, SamplingParams(max_new_tokens=1), 8, set())
    finally:
        hook.remove()
    prefix = 0
    while all(p[prefix] == prompts[0][prefix] for p in prompts):
        prefix += 1
    rests = {tuple(p[prefix:]) for p in prompts}
    assert len(rests) == len(prompts) - 1
    # one pass for the prefix, one for the distinct rests (left-padded to the longest)
    assert fed == [prefix, len(rests) * max(map(len, rests))]
    assert sum(fed) < sum(map(len, prompts))


def test_token_budget_bounds_the_batch_and_changes_nothing(tiny):
    model, _, prompts = tiny
    params = SamplingParams(max_new_tokens=6)
    longest = max(map(len, prompts))
    budget = 3 * (longest + 6)
    small, steps = run(model, prompts, params, 8, set(), max_batch_tokens=budget)
    big, _ = run(model, prompts, params, 8, set())
    assert max(len(s) for s in steps) == 3
    assert {i: f.tokens for i, f in small.items()} == {i: f.tokens for i, f in big.items()}


def test_sampling_is_seeded_and_tiny_top_p_is_greedy(tiny):
    model, _, prompts = tiny

    def tokens(**kw):
        out, _ = run(model, prompts, SamplingParams(max_new_tokens=8, **kw), 4, set())
        return {i: f.tokens for i, f in out.items()}

    hot = dict(temperature=1.0)
    assert tokens(seed=3, **hot) == tokens(seed=3, **hot)
    assert tokens(seed=3, **hot) != tokens(seed=4, **hot)
    assert tokens(seed=3, top_p=1e-6, **hot) == tokens()


def test_ignore_eos_always_runs_to_max_new_tokens(tiny):
    model, _, prompts = tiny
    eos = early_eos(model, prompts)
    out, _ = run(model, prompts, SamplingParams(max_new_tokens=9, ignore_eos=True), 4, eos)
    assert {len(f.tokens) for f in out.values()} == {9}
    assert {f.finish_reason for f in out.values()} == {"length"}


def test_sliding_window_models_are_refused_in_one_line():
    from transformers import MistralConfig, MistralForCausalLM

    from protege.backends.decode import check_model

    def mistral(**kw):
        return MistralForCausalLM(MistralConfig(vocab_size=64, hidden_size=16,
            intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, **kw))  # fmt: skip

    # a window given per layer, and one given only as `sliding_window` (Mistral-7B-v0.1)
    for model in (mistral(sliding_window=4, layer_types=["sliding_attention"] * 2),
                  mistral(sliding_window=4096)):  # fmt: skip
        with pytest.raises(UserError, match="SlidingWindow.*provider vllm"):
            next(decode(model, [[1, 2, 3]], SamplingParams(max_new_tokens=2), batch_size=2,
                        eos_ids=set()))  # fmt: skip
    check_model(mistral(sliding_window=None))  # no window: plain full attention


def test_sampler_draws_from_the_tempered_nucleus_distribution():
    """The inverse-CDF sampler against the distribution it should draw from."""
    from protege.backends.decode import _sample

    probs = torch.tensor([0.5, 0.3, 0.1, 0.1])
    logits = probs.log().repeat(40_000, 1)  # (A, V): one row per draw
    gen = torch.Generator().manual_seed(0)

    def freq(**kw):
        ids = _sample(logits, SamplingParams(**kw), gen)
        return torch.bincount(ids, minlength=4).float() / len(ids)

    assert torch.allclose(freq(temperature=1.0), probs, atol=0.01)
    hot = probs**2 / (probs**2).sum()  # temperature 0.5 squares the probabilities
    assert torch.allclose(freq(temperature=0.5), hot, atol=0.01)
    # top_p 0.7: 0.5 + 0.3 reaches it, so tokens 2 and 3 are never drawn
    assert torch.allclose(
        freq(temperature=1.0, top_p=0.7), torch.tensor([0.625, 0.375, 0, 0]), atol=0.01
    )
    assert torch.allclose(
        freq(temperature=1.0, top_k=2), torch.tensor([0.625, 0.375, 0, 0]), atol=0.01
    )
    assert freq(temperature=0.0).tolist() == [1.0, 0.0, 0.0, 0.0]
