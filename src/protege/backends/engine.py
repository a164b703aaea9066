"""What every API backend needs around its SDK calls: a client-side rate limiter, error
classes, retry delays, and `ApiBackend`, the request engine the adapters share. An SDK
is imported by name only when its adapter is used."""

from __future__ import annotations

import asyncio
import importlib
import json
import queue
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from protege.backends.base import Completion, SamplingParams

# error class -> retryable?
ERROR_CLASSES = {
    "rate_limit": True,  # 429
    "server": True,  # 5xx
    "timeout": True,
    "connection": True,  # reset, refused, DNS
    "malformed": True,  # unparseable body, empty choices: a flaky proxy, worth a retry
    "bad_request": False,  # 400, 404, 422: the request itself is wrong
    "auth": False,  # 401, 403
    "content_filter": False,  # the provider refused the content
}


def class_of_status(status: int) -> str:
    if status == 429:
        return "rate_limit"
    if status >= 500:
        return "server"
    if status in (401, 403):
        return "auth"
    return "bad_request"


def retry_delay(attempt: int, retry_after: float | None, base: float = 0.5, cap: float = 60.0,
                rng: random.Random | None = None) -> float:  # fmt: skip
    """Seconds to wait before retry number `attempt` (0-based): the server's Retry-After
    when it sent one (plus a little jitter so clients do not return in lockstep), else
    exponential backoff with full jitter."""
    r = rng or random
    if retry_after is not None and retry_after >= 0:
        return min(cap, retry_after) + r.uniform(0, 0.1 * base)
    return r.uniform(0, min(cap, base * 2**attempt))


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is rare from APIs and is ignored)."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@dataclass
class RateLimiter:
    """Client-side pacing for requests/minute and tokens/minute.

    Requests are spaced evenly (a leaky bucket) rather than sent in bursts up to the
    limit: a provider counting over any sliding window then never sees more than the
    limit, so the client itself causes no 429s, and the achieved rate still approaches
    the limit. `tokens` is the caller's estimate of what a request will consume."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    # Pace a little under the limit: a request that wakes late sends its successor
    # closer behind it, and the provider's clock is not ours.
    headroom: float = 0.98

    def __post_init__(self):
        self._next = 0.0
        self._lock = asyncio.Lock()

    def _cost(self, tokens: int) -> float:
        gaps = [0.0]
        if self.requests_per_minute:
            gaps.append(60.0 / (self.requests_per_minute * self.headroom))
        if self.tokens_per_minute:
            gaps.append(60.0 * tokens / (self.tokens_per_minute * self.headroom))
        return max(gaps)

    async def acquire(self, tokens: int = 0) -> None:
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._cost(tokens)
        if start > now:
            await asyncio.sleep(start - now)

    async def penalize(self, seconds: float) -> None:
        """After a 429, hold every request back, not only the one that was refused."""
        async with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)


class ResponseError(Exception):
    """A 200 response that is not a usable answer (empty choices, filtered content)."""

    def __init__(self, error_class: str, message: str):
        super().__init__(message)
        self.error_class = error_class


def classify_sdk_error(exc: BaseException, sdk) -> tuple[str, float | None, str]:
    """(error class, Retry-After seconds or None, one-line message) for an exception from
    an official SDK (`openai` and `anthropic` share these exception types by design)."""
    if isinstance(exc, ResponseError):
        return exc.error_class, None, str(exc)
    if isinstance(exc, sdk.APITimeoutError):
        return "timeout", None, "request timed out"
    if isinstance(exc, sdk.APIConnectionError):
        return "connection", None, f"connection error: {exc.__cause__ or exc}"
    if isinstance(exc, sdk.APIStatusError):
        retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
        msg = f"HTTP {exc.status_code}: {str(exc.message)[:200]}"
        return class_of_status(exc.status_code), retry_after, msg
    if isinstance(exc, (sdk.APIResponseValidationError, json.JSONDecodeError, ValueError)):
        return "malformed", None, f"malformed response: {str(exc)[:200]}"
    raise exc  # a bug, not an API failure: let it surface


class ApiBackend:
    """The request engine shared by API adapters: bounded concurrency, pacing, retries
    with backoff, and one Completion per request whatever happens. An adapter supplies
    `_client`, `_call`, `_classify` and `_complete` for its SDK."""

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 concurrency: int = 16, requests_per_minute: float | None = None,
                 tokens_per_minute: float | None = None, timeout_s: float = 600.0,
                 max_retries: int = 8, backoff_base_s: float = 0.5):  # fmt: skip
        self.model, self.base_url, self.api_key = model, base_url, api_key
        self.concurrency, self.timeout_s = concurrency, timeout_s
        self.max_retries, self.backoff_base_s = max_retries, backoff_base_s
        self.rpm, self.tpm = requests_per_minute, tokens_per_minute

    def generate(
        self, chats: Sequence[list[dict[str, str]]], params: SamplingParams
    ) -> Iterator[list[tuple[int, Completion]]]:
        """Yield (index, completion) pairs as requests finish, in whatever order."""
        return self._drive(list(chats), params, chat=True)

    def generate_texts(
        self, texts: Sequence[str], params: SamplingParams
    ) -> Iterator[list[tuple[int, Completion]]]:
        """Raw `/v1/completions`: the prompt is continued token-exactly."""
        return self._drive(list(texts), params, chat=False)

    def _drive(self, prompts: list, params: SamplingParams, chat: bool):
        # The SDK is async; the stages are plain loops. Run the event loop in a thread and
        # hand finished requests over a queue; closing the generator cancels the rest.
        results: queue.Queue = queue.Queue()
        stop = threading.Event()
        worker = threading.Thread(
            target=lambda: asyncio.run(self._run_all(prompts, params, chat, results, stop)),
            daemon=True,
        )
        worker.start()
        received = 0
        try:
            while received < len(prompts):
                batch = [results.get()]
                while not results.empty():
                    batch.append(results.get_nowait())
                for item in batch:
                    if isinstance(item, BaseException):
                        raise item
                received += len(batch)
                yield batch
        finally:
            stop.set()
            worker.join(timeout=30)

    async def _run_all(self, prompts, params, chat, results: queue.Queue, stop) -> None:
        client = self._client()
        limiter = RateLimiter(self.rpm, self.tpm)
        sem = asyncio.Semaphore(self.concurrency)

        async def one(i: int, prompt) -> None:
            try:
                results.put((i, await self._request(client, limiter, sem, prompt, params, chat)))
            except BaseException as e:  # a bug: hand it to the caller's thread
                results.put(e)
                raise

        tasks = {asyncio.create_task(one(i, p)) for i, p in enumerate(prompts)}
        try:
            while tasks and not stop.is_set():
                _, tasks = await asyncio.wait(tasks, timeout=0.2)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.close()

    async def _request(self, client, limiter, sem, prompt, params, chat) -> Completion:
        est = len(json.dumps(prompt)) // 4 + params.max_new_tokens
        for attempt in range(self.max_retries + 1):
            await limiter.acquire(est)
            t0 = time.monotonic()
            async with sem:
                try:
                    resp = await self._call(client, prompt, params, chat)
                    return self._complete(resp, time.monotonic() - t0, attempt + 1)
                except Exception as e:
                    cls, retry_after, msg = self._classify(e)
            if not ERROR_CLASSES[cls] or attempt == self.max_retries:
                break
            delay = retry_delay(attempt, retry_after, base=self.backoff_base_s)
            if cls == "rate_limit":
                await limiter.penalize(delay)
            await asyncio.sleep(delay)
        return Completion("", "error", 0, 0, time.monotonic() - t0, error=msg,
                          error_class=cls, attempts=attempt + 1)  # fmt: skip

    # The official SDKs share their shape: an async client class and exception types.
    sdk_name = ""
    client_class = ""

    def _client(self):
        sdk = importlib.import_module(self.sdk_name)
        client = getattr(sdk, self.client_class)
        return client(base_url=self.base_url, api_key=self.api_key or "none",
                      max_retries=0, timeout=self.timeout_s)  # fmt: skip

    def _classify(self, exc: BaseException) -> tuple[str, float | None, str]:
        return classify_sdk_error(exc, importlib.import_module(self.sdk_name))

    async def _call(self, client, prompt, params: SamplingParams, chat: bool):
        raise NotImplementedError

    def _complete(self, resp, latency: float, attempts: int) -> Completion:
        raise NotImplementedError
