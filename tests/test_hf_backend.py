import pytest

from protege.backends.base import SamplingParams
from protege.backends.hf import HFBackend
from protege.prompts import question_messages

CHATS = [
    question_messages(p)
    for p in [
        "1+1?",
        "Mia has 12 apples. How many?",
        "What is 3*4?",
        "Tom has 5 coins and buys 7 more coins.",
        "2?",
    ]
]


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return HFBackend(str(tiny_model_dir), precision="fp32", batch_size=3)


def collect(backend, chats, params):
    out = {}
    for batch in backend.generate(chats, params):
        out.update(batch)
    return out


def test_batched_greedy_equals_one_at_a_time(backend):
    """Left padding and the attention mask must make batching invisible to greedy output."""
    params = SamplingParams(max_new_tokens=12)
    batched = collect(backend, CHATS, params)
    assert sorted(batched) == list(range(len(CHATS)))
    for i, chat in enumerate(CHATS):
        single = collect(backend, [chat], params)[0]
        assert single.text == batched[i].text, i
        assert single.completion_tokens == batched[i].completion_tokens


def test_lengths_and_finish_reason(backend):
    out = collect(backend, CHATS, SamplingParams(max_new_tokens=7))
    for c in out.values():
        assert 1 <= c.completion_tokens <= 7 and c.prompt_tokens > 10
        assert c.finish_reason == ("length" if c.completion_tokens == 7 else "stop")


def test_sampling_is_seeded(backend):
    def texts(seed):
        p = SamplingParams(temperature=1.0, max_new_tokens=10, seed=seed)
        return {i: c.text for i, c in collect(backend, CHATS, p).items()}

    assert texts(3) == texts(3)
    assert texts(3) != texts(4)


def test_stop_regex_ends_a_row_early(backend):
    free = collect(backend, CHATS[:1], SamplingParams(max_new_tokens=20))[0]
    assert free.completion_tokens > 3
    # stop as soon as any two characters have been produced
    stopped = collect(backend, CHATS[:1], SamplingParams(max_new_tokens=20, stop_regex=r"\S\S"))[0]
    assert stopped.completion_tokens < free.completion_tokens
    assert stopped.finish_reason == "stop"
    assert free.text.startswith(stopped.text)


def test_token_budget_batches_give_the_same_greedy_text(tiny_model_dir):
    small = HFBackend(str(tiny_model_dir), precision="fp32", batch_size=8, max_batch_tokens=300)
    big = HFBackend(str(tiny_model_dir), precision="fp32", batch_size=8)
    params = SamplingParams(max_new_tokens=6)
    a = {i: c.text for i, c in collect(small, CHATS, params).items()}
    assert a == {i: c.text for i, c in collect(big, CHATS, params).items()}
