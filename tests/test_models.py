import pytest

from protege.errors import UserError
from protege.models import load_model, resolve


def test_unknown_alias_is_a_user_error():
    with pytest.raises(UserError, match=r"unknown model 'smollm-9000'"):
        resolve("smollm-9000")


def test_missing_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such model directory"):
        resolve(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="no such GGUF file"):
        resolve(str(tmp_path / "m.gguf"))
    with pytest.raises(UserError, match="no config.json"):
        resolve(str(tmp_path))


def test_hub_ids_pass_through():
    assert resolve("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_local_dir_loads(tiny_model_dir):
    model, tok = load_model(str(tiny_model_dir), precision="fp32")
    assert model.config.num_hidden_layers == 2 and not model.training
    assert tok.pad_token == "<|endoftext|>"
