import pytest

from protege.config import Recipe, load_recipe
from protege.errors import UserError


def test_defaults_validate():
    r = Recipe()
    assert r.generate.teacher == "smollm2-135m"
    assert r.run_root.as_posix() == "runs/quickstart"


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("train:\n  epocs: 3\n")
    with pytest.raises(UserError, match=r"unknown key 'train.epocs'"):
        load_recipe(p)


def test_bad_value_is_named(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("generate:\n  temperature: -1\n")
    with pytest.raises(UserError, match=r"generate.temperature: Input should be greater"):
        load_recipe(p)


def test_overrides_are_parsed_as_yaml(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: a\n")
    r = load_recipe(p, ["train.epochs=2", "curate.levels=[1]", "name=b"])
    assert (r.train.epochs, r.curate.levels, r.name) == (2, [1], "b")


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="not key.sub=value"):
        load_recipe(None, ["train.epochs"])
    with pytest.raises(UserError, match="no such recipe file"):
        load_recipe(tmp_path / "missing.yaml")


def test_teacher_hash_ignores_batch_size_only():
    a = Recipe().generate
    assert a.teacher_hash() == a.model_copy(update={"batch_size": 3}).teacher_hash()
    assert a.teacher_hash() != a.model_copy(update={"temperature": 0.1}).teacher_hash()


def test_quickstart_recipe_loads():
    from conftest import ROOT

    r = load_recipe(ROOT / "recipes" / "quickstart.yaml")
    assert r.name == "quickstart"
