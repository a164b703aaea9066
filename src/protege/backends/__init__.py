"""Text-generation engines behind one small protocol: `generate(chats, params)` yields
lists of (index, Completion) as they finish. `make_backend` picks one from a config."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from protege.config import GenerateConfig
from protege.errors import UserError


def is_proprietary(cfg: GenerateConfig) -> bool:
    """An API teacher that is not on this machine: its terms of service may forbid
    training on its outputs."""
    if cfg.provider in ("hf", "vllm"):
        return False
    default = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
    host = urlparse(cfg.base_url or default[cfg.provider]).hostname or ""
    return host not in ("127.0.0.1", "localhost", "::1")


def api_key(cfg: GenerateConfig) -> str | None:
    """From a key file or the environment only, never from the recipe itself."""
    if cfg.api_key_file:
        path = Path(cfg.api_key_file).expanduser()
        if not path.exists():
            raise UserError(f"{path}: no such API key file")
        return path.read_text().strip()
    env = cfg.api_key_env or f"{cfg.provider.upper()}_API_KEY"
    key = os.environ.get(env)
    if not key and is_proprietary(cfg):
        raise UserError(f"no API key: set ${env} or generate.api_key_file")
    return key


def make_backend(cfg: GenerateConfig):
    api = dict(
        base_url=cfg.base_url,
        api_key=api_key(cfg) if cfg.provider in ("openai", "anthropic") else None,
        concurrency=cfg.concurrency, requests_per_minute=cfg.requests_per_minute,
        tokens_per_minute=cfg.tokens_per_minute, timeout_s=cfg.timeout_s,
        max_retries=cfg.max_retries,
    )  # fmt: skip
    if cfg.provider == "openai":
        from protege.backends.openai_compat import OpenAIBackend

        return OpenAIBackend(cfg.teacher, **api)
    if cfg.provider == "anthropic":
        from protege.backends.anthropic_api import AnthropicBackend

        return AnthropicBackend(cfg.teacher, thinking_budget=cfg.thinking_budget, **api)
    if cfg.provider == "vllm":
        from protege.backends.vllm_offline import VLLMBackend

        return VLLMBackend(cfg.teacher, tensor_parallel_size=cfg.tensor_parallel_size,
                           precision=cfg.precision, seed=cfg.seed)  # fmt: skip
    from protege.backends.hf import HFBackend

    return HFBackend(cfg.teacher, cfg.precision, cfg.batch_size, cfg.max_batch_tokens)
