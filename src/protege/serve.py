"""`protege serve`: an OpenAI-compatible HTTP server for any local model (the student you
just trained, or the embedded model), on 127.0.0.1 by default.

Endpoints: GET /v1/models, POST /v1/chat/completions, POST /v1/completions, each with
`"stream": true` (server-sent events, a delta per decoding step, `stream_options:
{include_usage}`). One model, one request generating at a time: this is for trying a
student with any OpenAI client and for testing the `openai` backend against a real
server, not a production inference engine (use vLLM for that).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
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
            top_k=int(body.get("top_k") or 0),  # a vLLM extension, as extra_body
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

    def request(self, body: dict, chat: bool) -> tuple[list, SamplingParams]:
        """The validated prompts (one per choice) and sampling of a request."""
        if chat:
            msgs = body.get("messages")
            if (
                not isinstance(msgs, list)
                or not msgs
                or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in msgs)
            ):
                raise BadRequest("messages must be a non-empty list of {role, content} objects")
            prompt = [{"role": m.get("role", "user"), "content": m["content"]} for m in msgs]
        else:
            prompt = body.get("prompt")
            if not isinstance(prompt, str) or not prompt:
                raise BadRequest("prompt must be a non-empty string")
        if not isinstance(body.get("stream_options") or {}, dict):
            raise BadRequest("stream_options must be an object")
        return [prompt] * choices_n(body), sampling(body)

    def generate(self, prompts: list, chat: bool, params: SamplingParams, on_text=None):
        """Completions as they finish; call with `self.lock` held."""
        gen = self.backend.generate if chat else self.backend.generate_texts
        return gen(prompts, params, on_text=on_text)

    def reply(self, prompts: list, params: SamplingParams, chat: bool) -> dict:
        with self.lock:
            done = {i: c for batch in self.generate(prompts, chat, params) for i, c in batch}
        outs = [done[i] for i in range(len(prompts))]
        if chat:
            choices = [
                {"index": i, "message": {"role": "assistant", "content": c.text},
                 "finish_reason": c.finish_reason, "logprobs": None}
                for i, c in enumerate(outs)
            ]  # fmt: skip
        else:
            choices = [
                {"index": i, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}
                for i, c in enumerate(outs)
            ]
        return self._envelope("chat.completion" if chat else "text_completion", choices, outs)

    def stream(self, prompts: list, params: SamplingParams, chat: bool, usage: bool,
               emit: Callable[[dict], None]) -> None:  # fmt: skip
        """Send each choice's new text as it is decoded, then its finish reason. Text
        that could still change is held back: an unfinished UTF-8 character, trailing
        whitespace (chat replies are stripped) and what could be the start of a stop
        string (stop strings are cut from the reply). `usage` adds a last event with the
        token counts (`stream_options.include_usage`)."""
        kind = "chat.completion.chunk" if chat else "text_completion"
        head = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": kind,
                "created": int(time.time()), "model": self.model_name}  # fmt: skip
        sent = [""] * len(prompts)

        def send(i: int, delta: str, finish: str | None = None, role: bool = False) -> None:
            if chat:
                d = ({"role": "assistant"} if role else {}) | (
                    {"content": delta} if delta or role else {}
                )
                choice = {"index": i, "delta": d, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": i, "text": delta, "finish_reason": finish, "logprobs": None}
            emit(head | {"choices": [choice]})

        def on_text(i: int, text: str) -> None:
            safe = settled(text, params.stop, chat)
            if len(safe) > len(sent[i]) and safe.startswith(sent[i]):
                send(i, safe[len(sent[i]) :])
                sent[i] = safe

        for i in range(len(prompts)) if chat else ():
            send(i, "", role=True)
        outs = []
        with self.lock:  # released however the stream ends (a client gone mid-way too)
            for batch in self.generate(prompts, chat, params, on_text):
                for i, c in batch:
                    rest = c.text[len(sent[i]) :] if c.text.startswith(sent[i]) else ""
                    send(i, rest, c.finish_reason)
                    outs.append(c)
        if usage:
            emit(self._envelope(kind, [], outs) | {"id": head["id"]})

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


def settled(text: str, stops, chat: bool) -> str:
    """The part of a reply in progress that later tokens cannot change."""
    if chat:
        text = text.lstrip()
    text = text.rstrip("\ufffd")  # half a multi-byte character so far
    # the longest end of the text that a stop string starts with
    hold = max((k for x in stops for k in range(1, len(x)) if text.endswith(x[:k])), default=0)
    text = text[: len(text) - hold]
    return text.rstrip() if chat else text


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
            routes = {"/v1/chat/completions": True, "/v1/completions": False}
            chat = routes.get(self.path.rstrip("/"))
            if chat is None:
                return self._error(404, f"no route {self.path}", "not_found_error")
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise BadRequest("request body must be a JSON object")
                prompts, params = server.request(body, chat)  # a 400 before any event
                if body.get("stream"):
                    usage = bool((body.get("stream_options") or {}).get("include_usage"))
                    return self._stream(prompts, params, chat, usage)
                self._send(200, server.reply(prompts, params, chat))
            except (json.JSONDecodeError, BadRequest) as e:
                self._error(400, str(e), "invalid_request_error")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client left mid-reply
            except Exception as e:  # a bug or an exhausted device: a 500, not a dead socket
                self._error(500, f"{type(e).__name__}: {e}", "server_error")

        def _stream(self, prompts: list, params: SamplingParams, chat: bool, usage: bool) -> None:
            """Server-sent events, ended by `data: [DONE]`: in HTTP/1.1 chunks, or unframed
            until the connection closes for an HTTP/1.0 client (proxies often are)."""
            chunked = self.request_version != "HTTP/1.0"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.close_connection = True
            self.end_headers()

            def write(data: bytes) -> None:
                self.wfile.write(
                    f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data
                )
                self.wfile.flush()

            def event(payload: dict) -> None:
                write(f"data: {json.dumps(payload)}\n\n".encode())

            try:
                server.stream(prompts, params, chat, usage, event)
            except (BrokenPipeError, ConnectionResetError):
                raise
            except Exception as e:  # headers are out: report it in-band, then end cleanly
                event({"error": {"message": f"{type(e).__name__}: {e}", "type": "server_error"}})
            write(b"data: [DONE]\n\n")
            if chunked:
                self.wfile.write(b"0\r\n\r\n")

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
