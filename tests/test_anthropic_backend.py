"""The `anthropic` backend with the real SDK against a loopback server that speaks the
Messages API: thinking blocks become reasoning; 429/529 are retried; refusals recorded."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import send_json

from protege.backends.anthropic_api import AnthropicBackend
from protege.backends.base import SamplingParams


class Messages(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: dict[str, int] = {}
    requests: list[dict] = []

    def log_message(self, *args):
        pass

    def _send(self, status, payload, headers=()):
        send_json(self, status, json.dumps(payload).encode(), headers)

    def do_POST(self):
        assert self.path == "/v1/messages", self.path
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append({**req, "headers": dict(self.headers)})
        prompt = req["messages"][-1]["content"]
        n = self.seen.get(prompt, 0)
        self.seen[prompt] = n + 1
        steps = prompt.split("script:")[1].split(",")
        step = steps[min(n, len(steps) - 1)]
        err = {"type": "error", "error": {"type": "x", "message": step}}
        ok = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-test-1",
            "content": [
                {"type": "thinking", "thinking": "2+2=4", "signature": "s"},
                {"type": "text", "text": "The answer is 4."},
            ],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 11, "output_tokens": 7},
        }
        if step == "ok":
            self._send(200, ok)
        elif step == "refusal":
            self._send(200, {**ok, "stop_reason": "refusal"})
        elif step == "429":
            self._send(429, err, [("retry-after", "0.2")])
        else:
            self._send(int(step), err)


@pytest.fixture(scope="module")
def url():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Messages)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def ask(url, script, **kw):
    backend = AnthropicBackend(
        "claude-test", base_url=url, api_key="ak-1", max_retries=3, backoff_base_s=0.01, **kw
    )
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": f"{time.time_ns()} script:{script}"},
    ]
    return next(iter(backend.generate([chat], SamplingParams(max_new_tokens=50))))[0][1]


def test_thinking_blocks_become_reasoning(url):
    c = ask(url, "ok", thinking_budget=1024)
    assert (c.text, c.reasoning, c.model) == ("The answer is 4.", "2+2=4", "claude-test-1")
    assert (c.prompt_tokens, c.completion_tokens, c.finish_reason) == (11, 7, "stop")
    req = Messages.requests[-1]
    assert req["system"] == "Be brief." and [m["role"] for m in req["messages"]] == ["user"]
    assert req["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert req["max_tokens"] == 1074 and "temperature" not in req
    h = req["headers"]
    assert h.get("x-api-key") == "ak-1" or h.get("Authorization") == "Bearer ak-1"


@pytest.mark.parametrize(
    ("script", "error_class", "attempts"),
    [
        ("429,ok", None, 2),
        ("529,ok", None, 2),
        ("500,500,500,500", "server", 4),
        ("refusal", "content_filter", 1),
        ("400", "bad_request", 1),
        ("401", "auth", 1),
    ],
)
def test_faults(url, script, error_class, attempts):
    c = ask(url, script)
    assert (c.error_class, c.attempts) == (error_class, attempts)
