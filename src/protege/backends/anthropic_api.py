"""Anthropic's Messages API through the official `anthropic` SDK (async), with extended
thinking: thinking blocks become the sample's reasoning, text blocks its response."""

from __future__ import annotations

from protege.backends.base import Completion, SamplingParams
from protege.backends.engine import ApiBackend, ResponseError

STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def to_completion(resp, latency: float, attempts: int) -> Completion:
    blocks = getattr(resp, "content", None)
    if not blocks:
        raise ResponseError("malformed", "response has no content blocks")
    if resp.stop_reason == "refusal":
        raise ResponseError("content_filter", "the model refused (stop_reason=refusal)")
    thinking = [b.thinking for b in blocks if b.type == "thinking"]
    text = "".join(b.text for b in blocks if b.type == "text")
    usage = resp.usage
    return Completion(
        text=text,
        finish_reason=STOP_REASONS.get(resp.stop_reason or "", resp.stop_reason or "stop"),
        prompt_tokens=usage.input_tokens if usage else 0,
        completion_tokens=usage.output_tokens if usage else 0,
        latency_s=latency,
        reasoning="\n\n".join(thinking) if thinking else None,
        model=resp.model,
        attempts=attempts,
    )


class AnthropicBackend(ApiBackend):
    """`thinking_budget` > 0 turns on extended thinking with that many tokens. The
    current SDK's `messages.create` takes no temperature or top_p, so sampling is the
    API's own; samples differ across calls all the same."""

    def __init__(self, model: str, *, thinking_budget: int = 0, **kwargs):
        super().__init__(model, **kwargs)
        self.thinking_budget = thinking_budget

    sdk_name = "anthropic"
    client_class = "AsyncAnthropic"

    def _complete(self, resp, latency: float, attempts: int) -> Completion:
        return to_completion(resp, latency, attempts)

    async def _call(self, client, prompt, params: SamplingParams, chat: bool):
        if not chat:
            raise ResponseError("bad_request", "the Messages API has no raw completions")
        system = "\n\n".join(m["content"] for m in prompt if m["role"] == "system")
        kwargs = {"model": self.model, "max_tokens": params.max_new_tokens + self.thinking_budget,
                  "messages": [m for m in prompt if m["role"] != "system"]}  # fmt: skip
        if system:
            kwargs["system"] = system
        if self.thinking_budget:
            kwargs["thinking"] = {"type": "enabled", "budget_tokens": self.thinking_budget}
        if params.stop:
            kwargs["stop_sequences"] = list(params.stop)
        return await client.messages.create(**kwargs)
