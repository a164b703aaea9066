"""Achieved request rate against a rate-limited server, as a fraction of the limit.

A loopback server answers every chat completion after a fixed latency and enforces
`--rpm` over a sliding window (scaled down to `--window` seconds so the bench is short),
answering 429 past it. The `openai` backend is configured with the same limit; a good
client gets close to the limit (goal: >= 0.95) and causes no 429s itself.

    .venv/bin/python bench/api_rate.py [--rpm 600] [--latency 0.2] [--requests 400]
"""

from __future__ import annotations

import argparse
import collections
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from protege.backends.base import SamplingParams
from protege.backends.openai_compat import OpenAIBackend

OK = {"id": "x", "object": "chat.completion", "created": 0, "model": "bench",
      "choices": [{"index": 0, "finish_reason": "stop",
                   "message": {"role": "assistant", "content": "ok"}}],
      "usage": {"prompt_tokens": 5, "completion_tokens": 1}}  # fmt: skip


def limited_server(limit: int, window: float, latency: float):
    stamps: collections.deque = collections.deque()
    lock = threading.Lock()
    stats = {"ok": 0, "429": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            now = time.monotonic()
            with lock:
                while stamps and stamps[0] <= now - window:
                    stamps.popleft()
                allowed = len(stamps) < limit
                if allowed:
                    stamps.append(now)
                stats["ok" if allowed else "429"] += 1
            time.sleep(latency)
            body = json.dumps(OK if allowed else {"error": {"message": "rate limited"}}).encode()
            self.send_response(200 if allowed else 429)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rpm", type=float, default=600)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--window", type=float, default=10.0, help="server's sliding window (s)")
    args = ap.parse_args()
    limit = int(args.rpm * args.window / 60)
    httpd, stats = limited_server(limit, args.window, args.latency)
    url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    backend = OpenAIBackend("bench", base_url=url, api_key="k", concurrency=32,
                            requests_per_minute=args.rpm)  # fmt: skip
    chats = [[{"role": "user", "content": str(i)}] for i in range(args.requests)]
    t0 = time.monotonic()
    done = sum(len(b) for b in backend.generate(chats, SamplingParams(max_new_tokens=1)))
    elapsed = time.monotonic() - t0 - args.latency  # the last answer's latency is not rate
    achieved = (done / elapsed) * 60
    print(f"configured limit: {args.rpm:.0f} requests/min (server window {args.window:.0f} s)")
    print(f"achieved: {achieved:.0f} requests/min over {done} requests")
    print(f"achieved / limit: {achieved / args.rpm:.3f}")
    print(f"429s caused by the client: {stats['429']}")
    httpd.shutdown()


if __name__ == "__main__":
    main()
