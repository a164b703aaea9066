"""Records passed between stages, and validated, crash-safe JSONL reading and writing.

Every stage reads and writes JSONL. Appends are one `write` of whole lines followed by
flush+fsync, so a crash can leave at most one torn last line; `read_jsonl(..., torn_ok=True)`
drops it on resume (and `repair_jsonl` truncates it away) so nothing complete is lost or
duplicated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protege.errors import UserError


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Question(Record):
    id: str
    problem: str
    answer: str | list[str] | None = None  # a list: any of these is accepted
    domain: str | None = None
    source: str
    meta: dict[str, Any] = Field(default_factory=dict)


class Usage(Record):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0


class Sample(Record):
    question_id: str
    sample_idx: int
    teacher: str
    teacher_hash: str
    prompt: list[dict[str, str]]
    reasoning: str
    response: str
    finish_reason: str
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    latency_s: float = 0.0
    error: str | None = None


class Verdict(Record):
    question_id: str
    sample_idx: int
    extracted: str | None
    correct: bool
    reason: str


class TrainExample(Record):
    question_id: str
    sample_idx: int
    messages: list[dict[str, str]]


class EvalResult(Record):
    question_id: str
    model: str
    bench: str
    output: str
    extracted: str | None
    gold: str | None
    correct: bool
    completion_tokens: int
    finish_reason: str
    latency_s: float
    run_key: str  # which model weights and settings produced it (see evaluate.run_key)


R = TypeVar("R", bound=BaseModel)


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "record"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{loc}: {first['msg']}{more}"


def iter_jsonl(path: Path, torn_ok: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each line. A malformed line is a UserError naming
    `file:line`, except a final line without its newline when `torn_ok` (a crashed append)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    with path.open("rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    complete_last = data.endswith(b"\n")
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        is_torn_tail = i == len(lines) and not complete_last
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if is_torn_tail and torn_ok:
                return
            raise UserError(f"{path}:{i}: not valid JSON ({e})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
        yield i, obj


def read_jsonl(path: Path, model: type[R], torn_ok: bool = False) -> list[R]:
    """Read and validate every record; errors are `file:line: field: problem`."""
    out = []
    for i, obj in iter_jsonl(path, torn_ok=torn_ok):
        try:
            out.append(model.model_validate(obj))
        except ValidationError as e:
            raise UserError(f"{path}:{i}: {_one_line(e)}") from None
    return out


def repair_jsonl(path: Path) -> int:
    """Truncate a torn (newline-less, unparseable) last line left by a crash. Returns the
    number of bytes dropped. Call before resuming appends to the file."""
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    cut = data.rfind(b"\n") + 1
    tail = data[cut:]
    try:
        json.loads(tail.decode("utf-8"))
        with path.open("ab") as f:  # a whole record that only lacks its newline: keep it
            f.write(b"\n")
        return 0
    except (json.JSONDecodeError, UnicodeDecodeError):
        with path.open("r+b") as f:
            f.truncate(cut)
        return len(tail)


def _dumps(rec: BaseModel | dict) -> str:
    obj = rec.model_dump(mode="json") if isinstance(rec, BaseModel) else rec
    return json.dumps(obj, ensure_ascii=False)


def append_jsonl(path: Path, records: Iterable[BaseModel | dict]) -> int:
    """Append whole lines in one write, then fsync: a crash tears at most the last line."""
    payload = "".join(_dumps(r) + "\n" for r in records)
    if not payload:
        return 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    return payload.count("\n")


def write_jsonl(path: Path, records: Iterable[BaseModel | dict]) -> int:
    """Write a whole file atomically (temp file + rename): readers see all of it or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(_dumps(r) + "\n")
            n += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return n
