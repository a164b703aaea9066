"""`protege serve`: an OpenAI-compatible HTTP server for any local model (the student you
just trained, or the embedded model), on 127.0.0.1 by default.

Endpoints: GET /v1/models, POST /v1/chat/completions, POST /v1/completions (no
streaming). One model, one request generating at a time: this is for trying a student
with any OpenAI client and for testing the `openai` backend against a real server, not a
production inference engine (use vLLM for that).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from protege.backends.base import Completion, SamplingParams
from protege.backends.hf import HFBackend


class BadRequest(Exception):
    """A request the server refuses with 400 and this message."""


def sampling(body: dict) -> SamplingParams:
    """OpenAI request fields -> SamplingParams; bad values are a 400, not a crash."""
    try:
        stop = body.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 256
        params = SamplingParams(
            temperature=float(body.get("temperature", 1.0)),
            top_p=float(body.get("top_p", 1.0)),
            max_new_tokens=int(max_tokens),
            seed=int(body.get("seed") or 0),
            stop=stop,
        )
    except (TypeError, ValueError) as e:
        raise BadRequest(f"invalid sampling parameter: {e}") from None
    if params.max_new_tokens < 1 or params.temperature < 0 or not 0 < params.top_p <= 1:
        raise BadRequest("max_tokens must be >= 1, temperature >= 0, 0 < top_p <= 1")
    return params


def choices_n(body: dict) -> int:
    n = body.get("n", 1)
    if not isinstance(n, int) or not 1 <= n <= 16:
        raise BadRequest(f"n must be an integer from 1 to 16, got {n!r}")
    return n


class ModelServer:
    def __init__(self, backend: HFBackend, model_name: str, api_key: str | None = None):
        self.backend, self.model_name, self.api_key = backend, model_name, api_key
        self.lock = threading.Lock()  # one generation at a time on one model

    def complete(self, prompts: list, chat: bool, params: SamplingParams) -> list[Completion]:
        gen = self.backend.generate if chat else self.backend.generate_texts
        with self.lock:
            out = {i: c for batch in gen(prompts, params) for i, c in batch}
        return [out[i] for i in range(len(prompts))]

    def chat_completion(self, body: dict) -> dict:
        msgs = body.get("messages")
        if (
            not isinstance(msgs, list)
            or not msgs
            or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in msgs)
        ):
            raise BadRequest("messages must be a non-empty list of {role, content} objects")
        chat = [{"role": m.get("role", "user"), "content": m["content"]} for m in msgs]
        outs = self.complete([chat] * choices_n(body), True, sampling(body))
        choices = [
            {"index": i, "message": {"role": "assistant", "content": c.text},
             "finish_reason": c.finish_reason, "logprobs": None}
            for i, c in enumerate(outs)
        ]  # fmt: skip
        return self._envelope("chat.completion", choices, outs)

    def completion(self, body: dict) -> dict:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise BadRequest("prompt must be a string")
        outs = self.complete([prompt] * choices_n(body), False, sampling(body))
        choices = [
            {"index": i, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}
            for i, c in enumerate(outs)
        ]
        return self._envelope("text_completion", choices, outs)

    def _envelope(self, kind: str, choices: list, outs: list[Completion]) -> dict:
        prompt = outs[0].prompt_tokens if outs else 0
        completion = sum(c.completion_tokens for c in outs)
        return {
            "id": f"cmpl-{uuid.uuid4().hex[:24]}",
            "object": kind,
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        }  # fmt: skip

    def models(self) -> dict:
        card = {"id": self.model_name, "object": "model", "created": 0, "owned_by": "protege"}
        return {"object": "list", "data": [card]}


def make_handler(server: ModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # one quiet line per request on stderr
            pass

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, kind: str) -> None:
            self._send(status, {"error": {"message": message, "type": kind, "code": status}})

        def _authorized(self) -> bool:
            if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                self._error(401, "invalid or missing API key", "authentication_error")
                return False
            return True

        def do_GET(self):
            if not self._authorized():
                return
            if self.path.rstrip("/") == "/v1/models":
                return self._send(200, server.models())
            self._error(404, f"no route {self.path}", "not_found_error")

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if not self._authorized():
                return
            routes = {"/v1/chat/completions": server.chat_completion,
                      "/v1/completions": server.completion}  # fmt: skip
            route = routes.get(self.path.rstrip("/"))
            if route is None:
                return self._error(404, f"no route {self.path}", "not_found_error")
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise BadRequest("request body must be a JSON object")
                if body.get("stream"):
                    raise BadRequest("streaming is not supported by protege serve")
                self._send(200, route(body))
            except (json.JSONDecodeError, BadRequest) as e:
                self._error(400, str(e), "invalid_request_error")

    return Handler


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          precision: str = "auto", ready=None) -> None:  # fmt: skip
    """Load the model and serve until interrupted. `ready(httpd)` is called once listening."""
    backend = HFBackend(model, precision, batch_size=16)
    httpd = ThreadingHTTPServer((host, port), make_handler(ModelServer(backend, model, api_key)))
    httpd.daemon_threads = True
    print(f"protege serve: {model} on http://{host}:{httpd.server_address[1]}/v1", flush=True)
    if ready:
        ready(httpd)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
