"""`protege`: thin dispatch to the stages. Every stage is a subcommand taking the same
recipe file as `protege run`, and `key.sub=value` overrides."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from protege import __version__
from protege.errors import UserError
from protege.rundir import STAGES

# stage name -> module with `run(recipe, rundir, force) -> manifest | None`
STAGE_MODULES = {
    "curate": "protege.curate.stage",
    "generate": "protege.generate",
    "verify": "protege.verify",
    "train": "protege.train",
    "eval": "protege.evaluate",
    "report": "protege.report",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="protege", description=__doc__)
    p.add_argument("--version", action="version", version=f"protege {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    helps = {"run": "run the whole pipeline (resumable)"} | {
        s: f"run only the {s} stage" for s in STAGES
    }
    for name, text in helps.items():
        sp = sub.add_parser(name, help=text)
        sp.add_argument("recipe", help="recipe YAML file ('-' for the defaults)")
        sp.add_argument("overrides", nargs="*", help="key.sub=value overrides")
        sp.add_argument("--force", action="store_true", help="redo even if up to date")
        sp.add_argument("--debug", action="store_true", help="show tracebacks")
    sv = sub.add_parser("serve", help="OpenAI-compatible server for a local model")
    sv.add_argument("model", help="alias, local HF directory (e.g. runs/x/04-train/model), .gguf")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--api-key", default=None, help="require this key (default: $PROTEGE_API_KEY)")
    sv.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    sv.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def run_stages(recipe, stages: list[str], force: bool = False) -> None:
    from protege.config import dump_recipe
    from protege.rundir import RunDir

    rd = RunDir(recipe.run_root)
    rd.root.mkdir(parents=True, exist_ok=True)
    text = dump_recipe(recipe)
    if not rd.recipe.exists() or rd.recipe.read_text() != text:
        tmp = rd.recipe.with_name("recipe.yaml.tmp")
        tmp.write_text(text)
        os.replace(tmp, rd.recipe)
    for name in stages:
        t0 = time.perf_counter()
        module = importlib.import_module(STAGE_MODULES[name])
        manifest = module.run(recipe, rd, force=force)
        took = time.perf_counter() - t0
        if manifest is None:
            print(f"[{name}] up to date, skipped", flush=True)
        else:
            print(f"[{name}] done in {took:.1f}s: {_brief(manifest['counts'])}", flush=True)
    if "report" in stages or stages[-1] == "eval":
        report = rd.stage("report") / "report.md"
        if report.exists():
            print_accuracy(report)
            print(f"\nreport: {report}")


def _brief(counts: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items() if not isinstance(v, dict)) or "-"


def print_accuracy(report_path) -> None:
    """Echo the report's accuracy table, the number the run exists for."""
    text = report_path.read_text()
    head = "## Held-out accuracy (greedy)"
    if head in text:
        print("\n" + head.lstrip("# "))
        print(text.split(head, 1)[1].split("\n## ", 1)[0].strip())


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        if args.command == "serve":
            from protege.serve import serve

            key = args.api_key or os.environ.get("PROTEGE_API_KEY")
            serve(args.model, args.host, args.port, key, args.precision)
            return 0
        from protege.config import load_recipe

        recipe = load_recipe(None if args.recipe == "-" else args.recipe, args.overrides)
        stages = list(STAGES) if args.command == "run" else [args.command]
        run_stages(recipe, stages, force=args.force)
    except UserError as e:
        if args.debug:
            raise
        print(f"protege: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. the port is taken
        if args.debug:
            raise
        print(f"protege: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("protege: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
