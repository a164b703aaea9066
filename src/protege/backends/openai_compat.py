"""Any OpenAI-compatible endpoint through the official `openai` SDK (async): OpenAI,
DeepSeek, OpenRouter, Together, and self-hosted vLLM, SGLang, llama.cpp, Ollama or
`protege serve`, selected by `base_url`.

Requests run concurrently (bounded), paced by a client-side limiter, retried with backoff
on retryable errors (honouring Retry-After), and every request ends as a Completion: a
success, or a failure carrying its error class. The SDK's own retries are off so that
there is exactly one retry policy.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Iterator, Sequence

from protege.backends.base import Completion, SamplingParams
from protege.backends.engine import (
    ERROR_CLASSES,
    RateLimiter,
    class_of_status,
    parse_retry_after,
    retry_delay,
)


class ResponseError(Exception):
    """A 200 response that is not a usable answer (empty choices, filtered content)."""

    def __init__(self, error_class: str, message: str):
        super().__init__(message)
        self.error_class = error_class


def classify(exc: BaseException) -> tuple[str, float | None, str]:
    """(error class, Retry-After seconds or None, one-line message) for an exception."""
    import openai

    if isinstance(exc, ResponseError):
        return exc.error_class, None, str(exc)
    if isinstance(exc, openai.APITimeoutError):
        return "timeout", None, "request timed out"
    if isinstance(exc, openai.APIConnectionError):
        return "connection", None, f"connection error: {exc.__cause__ or exc}"
    if isinstance(exc, openai.APIStatusError):
        retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
        msg = f"HTTP {exc.status_code}: {str(exc.message)[:200]}"
        return class_of_status(exc.status_code), retry_after, msg
    if isinstance(exc, (openai.APIResponseValidationError, json.JSONDecodeError, ValueError)):
        return "malformed", None, f"malformed response: {str(exc)[:200]}"
    raise exc  # a bug, not an API failure: let it surface


def to_completion(resp, latency: float, attempts: int) -> Completion:
    """Map a chat or text completion response; reasoning from `reasoning_content` or
    `reasoning` when the server returns it separately."""
    if not getattr(resp, "choices", None):
        raise ResponseError("malformed", "response has no choices")
    choice = resp.choices[0]
    if choice.finish_reason == "content_filter":
        raise ResponseError("content_filter", "the provider's content filter refused it")
    msg = getattr(choice, "message", None)
    text = (msg.content if msg is not None else choice.text) or ""
    reasoning = None
    if msg is not None:
        reasoning = getattr(msg, "reasoning_content", None) or getattr(msg, "reasoning", None)
    usage = resp.usage
    details = getattr(usage, "completion_tokens_details", None) if usage else None
    return Completion(
        text=text,
        finish_reason=choice.finish_reason or "stop",
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        latency_s=latency,
        reasoning=reasoning if isinstance(reasoning, str) else None,
        reasoning_tokens=(getattr(details, "reasoning_tokens", None) or 0) if details else 0,
        model=getattr(resp, "model", None),
        attempts=attempts,
    )


class OpenAIBackend:
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
        import openai

        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key or "none",
                                    max_retries=0, timeout=self.timeout_s)  # fmt: skip
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
                    return to_completion(resp, time.monotonic() - t0, attempt + 1)
                except Exception as e:
                    cls, retry_after, msg = classify(e)
            if not ERROR_CLASSES[cls] or attempt == self.max_retries:
                break
            delay = retry_delay(attempt, retry_after, base=self.backoff_base_s)
            if cls == "rate_limit":
                await limiter.penalize(delay)
            await asyncio.sleep(delay)
        return Completion("", "error", 0, 0, time.monotonic() - t0, error=msg,
                          error_class=cls, attempts=attempt + 1)  # fmt: skip

    async def _call(self, client, prompt, params: SamplingParams, chat: bool):
        kwargs = {"model": self.model, "temperature": params.temperature,
                  "top_p": params.top_p, "max_tokens": params.max_new_tokens}  # fmt: skip
        if params.stop:
            kwargs["stop"] = list(params.stop)
        if chat:
            return await client.chat.completions.create(messages=prompt, **kwargs)
        return await client.completions.create(prompt=prompt, **kwargs)
