"""The run directory: where each stage's files live, and the manifests that mark them done.

A manifest is written last and atomically; its presence means the stage finished. A stage
whose config hash and input hashes equal those in its manifest is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protege import __version__

STAGES = ("curate", "generate", "verify", "train", "eval", "report")
_DIRS = {s: f"{i:02d}-{s}" for i, s in enumerate(STAGES, start=1)}


def protege_home() -> Path:
    """Caches (converted models, logit caches) live here, never in the source tree."""
    return Path(os.environ.get("PROTEGE_HOME", Path.home() / ".cache" / "protege"))


@dataclass(frozen=True)
class RunDir:
    root: Path

    def stage(self, name: str) -> Path:
        return self.root / _DIRS[name]

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def questions(self) -> Path:
        return self.stage("curate") / "questions.jsonl"

    @property
    def eval_questions(self) -> Path:
        return self.stage("curate") / "eval_questions.jsonl"

    @property
    def samples(self) -> Path:
        return self.stage("generate") / "samples.jsonl"

    @property
    def kept(self) -> Path:
        return self.stage("verify") / "kept.jsonl"

    @property
    def rejected(self) -> Path:
        return self.stage("verify") / "rejected.jsonl"

    @property
    def train_set(self) -> Path:
        return self.stage("verify") / "train.jsonl"

    @property
    def model(self) -> Path:
        return self.stage("train") / "model"

    @property
    def train_metrics(self) -> Path:
        return self.stage("train") / "metrics.jsonl"

    def eval_dir(self, model_label: str, bench: str) -> Path:
        return self.stage("eval") / model_label / bench

    def manifest(self, stage: str) -> Path:
        return self.stage(stage) / "manifest.json"


def hash_config(obj: Any) -> str:
    """Stable short hash of a JSON-able config (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents, sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        if path.is_dir():
            h.update(str(p.relative_to(path)).encode() + b"\0")
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _rel(run: RunDir, p: Path) -> str:
    try:
        return str(Path(p).relative_to(run.root))
    except ValueError:
        return str(p)


def hash_paths(run: RunDir, paths: list[Path]) -> dict[str, str]:
    return {_rel(run, p): sha256_path(p) for p in paths}


def read_manifest(run: RunDir, stage: str) -> dict | None:
    path = run.manifest(stage)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a manifest is written atomically, so this is outside damage: redo


def is_fresh(run: RunDir, stage: str, config_hash: str, inputs: list[Path]) -> bool:
    """True when the stage finished with this config and these exact inputs."""
    m = read_manifest(run, stage)
    if m is None or m.get("status") != "done" or m.get("config_hash") != config_hash:
        return False
    if any(not Path(p).exists() for p in inputs):
        return False
    if m.get("inputs") != hash_paths(run, inputs):
        return False
    return all((run.root / rel).exists() for rel in m.get("outputs", {}))


def write_manifest(
    run: RunDir,
    stage: str,
    *,
    config_hash: str,
    inputs: list[Path],
    outputs: list[Path],
    counts: dict[str, Any],
    seconds: float,
    cost: float = 0.0,
    extra: dict[str, Any] | None = None,
) -> dict:
    """Write the stage's manifest last, atomically (temp file + rename)."""
    manifest = {
        "stage": stage,
        "status": "done",
        "protege_version": __version__,
        "config_hash": config_hash,
        "inputs": hash_paths(run, inputs),
        "outputs": hash_paths(run, outputs),
        "counts": counts,
        "seconds": round(seconds, 3),
        "cost": cost,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    path = run.manifest(stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("manifest.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)
    return manifest


def invalidate(run: RunDir, stage: str) -> None:
    """Remove a stale manifest before redoing a stage, so a crash mid-way never leaves a
    manifest that vouches for half-rewritten outputs."""
    run.manifest(stage).unlink(missing_ok=True)
