import json

import pytest

from protege.errors import UserError
from protege.records import Question, append_jsonl, read_jsonl, repair_jsonl, write_jsonl


def q(i: int) -> Question:
    return Question(id=f"q{i}", problem=f"problem {i}", answer=str(i), source="test")


def test_roundtrip_and_atomic_write(tmp_path):
    path = tmp_path / "q.jsonl"
    assert write_jsonl(path, [q(1), q(2)]) == 2
    assert [r.id for r in read_jsonl(path, Question)] == ["q1", "q2"]
    assert not path.with_name("q.jsonl.tmp").exists()


def test_malformed_line_reports_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(q(1).model_dump()) + "\n{not json\n")
    with pytest.raises(UserError, match=r"bad\.jsonl:2: not valid JSON"):
        read_jsonl(path, Question)


def test_invalid_record_names_the_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": "x", "source": "s"}) + "\n")
    with pytest.raises(UserError, match=r"bad\.jsonl:1: problem: Field required"):
        read_jsonl(path, Question)


def test_unknown_field_is_an_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({**q(1).model_dump(), "probelm": "typo"}) + "\n")
    with pytest.raises(UserError, match=r":1: probelm: Extra inputs"):
        read_jsonl(path, Question)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_jsonl(tmp_path / "nope.jsonl", Question)


def test_torn_last_line_is_dropped_on_resume(tmp_path):
    path = tmp_path / "s.jsonl"
    append_jsonl(path, [q(1), q(2)])
    with path.open("a") as f:
        f.write('{"id": "q3", "prob')  # a crash mid-append
    with pytest.raises(UserError):
        read_jsonl(path, Question)
    assert [r.id for r in read_jsonl(path, Question, torn_ok=True)] == ["q1", "q2"]
    assert repair_jsonl(path) == len('{"id": "q3", "prob')
    append_jsonl(path, [q(3)])
    assert [r.id for r in read_jsonl(path, Question)] == ["q1", "q2", "q3"]


def test_complete_record_missing_only_its_newline_is_kept(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(q(1).model_dump()))
    assert repair_jsonl(path) == 0
    append_jsonl(path, [q(2)])
    assert [r.id for r in read_jsonl(path, Question)] == ["q1", "q2"]
