"""Any OpenAI-compatible endpoint through the official `openai` SDK (async): OpenAI,
DeepSeek, OpenRouter, Together, and self-hosted vLLM, SGLang, llama.cpp, Ollama or
`protege serve`, selected by `base_url`.

Requests run concurrently (bounded), paced by a client-side limiter, retried with backoff
on retryable errors (honouring Retry-After), and every request ends as a Completion: a
success, or a failure carrying its error class. The SDK's own retries are off so that
there is exactly one retry policy.
"""

from __future__ import annotations

from protege.backends.base import Completion, SamplingParams
from protege.backends.engine import ApiBackend, ResponseError


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


class OpenAIBackend(ApiBackend):
    """Chat completions (`generate`) or raw completions (`generate_texts`)."""

    sdk_name = "openai"
    client_class = "AsyncOpenAI"

    def _complete(self, resp, latency: float, attempts: int) -> Completion:
        return to_completion(resp, latency, attempts)

    async def _call(self, client, prompt, params: SamplingParams, chat: bool):
        kwargs = {"model": self.model, "temperature": params.temperature,
                  "top_p": params.top_p, "max_tokens": params.max_new_tokens}  # fmt: skip
        if params.stop:
            kwargs["stop"] = list(params.stop)
        if params.top_k:  # not an OpenAI parameter: servers built on vLLM & co. take it
            kwargs["extra_body"] = {"top_k": params.top_k}
        if chat:
            return await client.chat.completions.create(messages=prompt, **kwargs)
        return await client.completions.create(prompt=prompt, **kwargs)
