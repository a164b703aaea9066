"""Dependencies point down: cli -> stages -> {backends, models, prompts, answers}
-> {config, records, rundir, errors}. Stages talk only through files."""

import ast
from pathlib import Path

import protege

SRC = Path(protege.__file__).parent
STAGES = {"curate", "generate", "verify", "train", "evaluate", "report", "serve"}
SHARED = {"backends", "models", "prompts", "answers", "workers"}
PART_OF = {
    "verify_card": "verify",
    "verify_judge": "verify",
}  # a stage's helper module counts as the stage
BASE = {"config", "records", "rundir", "errors"}


def protege_imports(path: Path) -> set[str]:
    """Top-level protege modules imported anywhere in the file (lazy imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("protege"):
            parts = node.module.split(".")
            out.add(parts[1] if len(parts) > 1 else node.names[0].name)
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("protege.")}
    return out


def layer_of(path: Path) -> str:
    rel = path.relative_to(SRC).parts
    name = rel[0].removesuffix(".py")
    return PART_OF.get(name, name)


def test_dependencies_point_down():
    bad = []
    for path in SRC.rglob("*.py"):
        me = layer_of(path)
        deps = {PART_OF.get(d, d) for d in protege_imports(path)} - {me, "__init__", "__version__"}
        if me in STAGES:
            bad += [(me, d) for d in deps if d in STAGES or d == "cli"]
        elif me in SHARED:
            bad += [(me, d) for d in deps if d in STAGES | {"cli"}]
        elif me in BASE:
            bad += [(me, d) for d in deps if d not in BASE]
    assert bad == []


def test_package_init_imports_nothing():
    assert protege_imports(SRC / "__init__.py") == set()
    tree = ast.parse((SRC / "__init__.py").read_text())
    assert not [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
