"""The `openai` backend with the real SDK, against real servers on 127.0.0.1:
`protege serve` running a tiny model, and a fault-injecting server."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import send_json

from protege.backends.base import SamplingParams
from protege.backends.openai_compat import OpenAIBackend
from protege.serve import ModelServer, make_handler


def start(handler) -> tuple[ThreadingHTTPServer, str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def collect(backend, prompts, params, texts=False):
    gen = backend.generate_texts if texts else backend.generate
    return {i: c for batch in gen(prompts, params) for i, c in batch}


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    from protege.backends.hf import HFBackend

    hf = HFBackend(str(tiny_model_dir), "fp32", batch_size=4)
    httpd, url = start(make_handler(ModelServer(hf, "tiny", api_key="sekret")))
    yield hf, url
    httpd.shutdown()


def test_chat_through_the_real_sdk_matches_local_generation(served):
    hf, url = served
    chats = [[{"role": "user", "content": f"Mia has {i} apples."}] for i in range(5)]
    params = SamplingParams(max_new_tokens=8)
    backend = OpenAIBackend("tiny", base_url=url, api_key="sekret", concurrency=3)
    remote = collect(backend, chats, params)
    local = {i: c for b in hf.generate(chats, params) for i, c in b}
    assert sorted(remote) == list(range(5))
    for i in range(5):
        assert remote[i].text == local[i].text and remote[i].error is None
        assert remote[i].completion_tokens == local[i].completion_tokens
        assert remote[i].model == "tiny" and remote[i].finish_reason in ("stop", "length")


def test_top_k_reaches_the_server_as_a_vllm_style_extension(served):
    _, url = served
    chats = [[{"role": "user", "content": f"Tom has {i} coins."}] for i in range(3)]
    backend = OpenAIBackend("tiny", base_url=url, api_key="sekret")
    greedy = collect(backend, chats, SamplingParams(max_new_tokens=8))
    top1 = collect(backend, chats, SamplingParams(temperature=1.5, top_k=1, max_new_tokens=8))
    hot = collect(backend, chats, SamplingParams(temperature=1.5, max_new_tokens=8))
    assert [top1[i].text for i in range(3)] == [greedy[i].text for i in range(3)]
    assert [hot[i].text for i in range(3)] != [greedy[i].text for i in range(3)]


def test_raw_completions_and_models(served):
    import openai

    _, url = served
    backend = OpenAIBackend("tiny", base_url=url, api_key="sekret")
    out = collect(backend, ["The answer is"], SamplingParams(max_new_tokens=5), texts=True)
    assert out[0].error is None and out[0].completion_tokens >= 1
    client = openai.OpenAI(base_url=url, api_key="sekret")
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_streaming_through_the_real_sdk_adds_up_to_the_whole_reply(served):
    import openai

    _, url = served
    client = openai.OpenAI(base_url=url, api_key="sekret")
    msgs = [{"role": "user", "content": "Mia has 12 apples. How many?"}]
    args = dict(model="tiny", max_tokens=10, temperature=0, n=2)
    whole = client.chat.completions.create(messages=msgs, **args)
    stream = client.chat.completions.create(
        messages=msgs, stream=True, stream_options={"include_usage": True}, **args
    )
    chunks = list(stream)
    text, finish = ["", ""], [None, None]
    for ch in chunks[:-1]:
        (c,) = ch.choices
        text[c.index] += c.delta.content or ""
        finish[c.index] = c.finish_reason or finish[c.index]
    assert sum(bool(ch.choices and ch.choices[0].delta.content) for ch in chunks) > 2
    assert text == [c.message.content for c in whole.choices]
    assert finish == [c.finish_reason for c in whole.choices]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    # raw completions stream too, and a stop string never leaks into the deltas
    full = client.completions.create(model="tiny", prompt="The answer is", max_tokens=12)
    stop = full.choices[0].text[4:6]
    deltas = [
        ch.choices[0].text
        for ch in client.completions.create(
            model="tiny", prompt="The answer is", max_tokens=12, stop=[stop], stream=True
        )
    ]
    cut = client.completions.create(
        model="tiny", prompt="The answer is", max_tokens=12, stop=[stop]
    )
    assert "".join(deltas) == cut.choices[0].text == full.choices[0].text.split(stop)[0]
    with pytest.raises(openai.BadRequestError, match="non-empty"):  # a 400, before any event
        client.completions.create(model="tiny", prompt="", stream=True)


def test_wrong_key_is_a_final_auth_error(served):
    _, url = served
    backend = OpenAIBackend("tiny", base_url=url, api_key="wrong", max_retries=3)
    c = collect(backend, [[{"role": "user", "content": "hi"}]], SamplingParams(max_new_tokens=2))[0]
    assert (c.error_class, c.attempts) == ("auth", 1) and "401" in c.error


class Faults(BaseHTTPRequestHandler):
    """Answers according to a script in the user message: "script:429,500,ok" fails
    with 429, then 500, then succeeds; each prompt keeps its own position."""

    protocol_version = "HTTP/1.1"
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def _send(self, status, body: bytes, headers=()):
        send_json(self, status, body, headers)

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = req["messages"][-1]["content"]
        with self.lock:
            n = self.seen.get(prompt, 0)
            self.seen[prompt] = n + 1
        steps = prompt.split("script:")[1].split(",")
        step = steps[min(n, len(steps) - 1)]
        ok = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "fault-1",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {
                        "role": "assistant",
                        "content": "The answer is 4.",
                        "reasoning_content": "2+2=4",
                    },
                }
            ],
            "usage": {
                "prompt_tokens": 7,
                "completion_tokens": 5,
                "completion_tokens_details": {"reasoning_tokens": 3},
            },
        }
        err = json.dumps({"error": {"message": step, "type": "x"}}).encode()
        if step == "ok":
            self._send(200, json.dumps(ok).encode())
        elif step == "length":
            ok["choices"][0]["finish_reason"] = "length"
            self._send(200, json.dumps(ok).encode())
        elif step == "filter":
            ok["choices"][0]["finish_reason"] = "content_filter"
            self._send(200, json.dumps(ok).encode())
        elif step == "empty":
            self._send(200, json.dumps({**ok, "choices": []}).encode())
        elif step == "malformed":
            self._send(200, b'{"id": "x", "choices": [')
        elif step == "429ra":
            self._send(429, err, [("Retry-After", "0.3")])
        elif step.isdigit():
            self._send(int(step), err)
        elif step == "slow":
            time.sleep(1.5)
            self._send(200, json.dumps(ok).encode())
        elif step == "reset":
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True


@pytest.fixture(scope="module")
def faults():
    httpd, url = start(Faults)
    yield url
    httpd.shutdown()


@pytest.mark.parametrize(
    ("script", "error_class", "attempts"),
    [
        ("ok", None, 1),
        ("429,ok", None, 2),
        ("429ra,ok", None, 2),
        ("500,502,503,ok", None, 4),
        ("slow,ok", None, 2),  # timed out once, then answered
        ("reset,ok", None, 2),
        ("malformed,ok", None, 2),
        ("empty,ok", None, 2),
        ("length", None, 1),
        ("filter", "content_filter", 1),
        ("400", "bad_request", 1),
        ("401", "auth", 1),
        ("503", "server", 4),  # retried until max_retries, then recorded
    ],
)
def test_each_fault_ends_as_specified(faults, script, error_class, attempts):
    backend = OpenAIBackend(
        "fault-1", base_url=faults, api_key="k", max_retries=3, timeout_s=1.0, backoff_base_s=0.01
    )
    chat = [{"role": "user", "content": f"{time.time_ns()} script:{script}"}]
    c = collect(backend, [chat], SamplingParams(max_new_tokens=5))[0]
    assert (c.error_class, c.attempts) == (error_class, attempts), c.error
    if error_class is None:
        assert (c.text, c.reasoning, c.reasoning_tokens) == ("The answer is 4.", "2+2=4", 3)
        assert c.finish_reason == ("length" if script == "length" else "stop")
    else:
        assert c.text == "" and c.error


def test_retry_after_is_honoured(faults):
    backend = OpenAIBackend("fault-1", base_url=faults, api_key="k", backoff_base_s=0.001)
    chat = [{"role": "user", "content": f"{time.time_ns()} script:429ra,ok"}]
    t0 = time.monotonic()
    c = collect(backend, [chat], SamplingParams(max_new_tokens=5))[0]
    assert c.error is None and time.monotonic() - t0 >= 0.3


def test_many_requests_in_flight_all_complete(faults):
    backend = OpenAIBackend(
        "fault-1", base_url=faults, api_key="k", concurrency=8, backoff_base_s=0.01
    )
    chats = [
        [{"role": "user", "content": f"{time.time_ns()}-{i} script:{s}"}]
        for i, s in enumerate(["ok", "429,ok", "500,ok", "reset,ok"] * 10)
    ]
    out = collect(backend, chats, SamplingParams(max_new_tokens=5))
    assert sorted(out) == list(range(40)) and all(c.error is None for c in out.values())


def test_settled_holds_back_what_later_tokens_could_change():
    from protege.serve import settled

    assert settled("\n  The ans", (), chat=True) == "The ans"  # chat replies are stripped
    assert settled("The answer  \n", (), chat=True) == "The answer"
    assert settled("caf\ufffd", (), chat=False) == "caf"  # half a UTF-8 character
    # "###" could still become the stop string "####": held back until it cannot
    assert settled("x = 5 ###", ("####",), chat=False) == "x = 5 "
    assert settled("x = 5 #", ("####", "\n\n"), chat=False) == "x = 5 "
    assert settled("x = 5", ("####",), chat=False) == "x = 5"


def test_http10_clients_get_unframed_events_until_close(served):
    _, url = served
    host, port = url.split("//")[1].split("/")[0].split(":")
    body = json.dumps({"model": "tiny", "prompt": "The answer is", "max_tokens": 4, "stream": True})
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(
            f"POST /v1/completions HTTP/1.0\r\nAuthorization: Bearer sekret\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
        )
        raw = b"".join(iter(lambda: s.recv(65536), b""))  # until the server closes
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower() and b" 200 " in head.split(b"\r\n")[0]
    events = [e for e in payload.decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


class Broken:
    """A backend whose device fails mid-request (what a CUDA OOM looks like to serve)."""

    def generate(self, prompts, params, on_text=None):
        raise RuntimeError("device lost")

    generate_texts = generate


def test_a_failing_model_is_a_500_or_an_error_event_never_a_dead_socket():
    import openai

    httpd, url = start(make_handler(ModelServer(Broken(), "broken")))
    try:
        client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError, match="device lost"):
            client.completions.create(model="broken", prompt="hi", max_tokens=2)
        with pytest.raises(openai.APIError, match="device lost"):
            list(client.completions.create(model="broken", prompt="hi", max_tokens=2, stream=True))
    finally:
        httpd.shutdown()
