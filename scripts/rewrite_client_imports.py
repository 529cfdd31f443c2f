"""Point imports at the modules that moved into the client distribution (`client/`, import name
`neuron_atlas_client`): the API's models, the options, the errors, the client, the remote CLI,
the option flags and the MLflow helper.

    python scripts/rewrite_client_imports.py [PATH ...]   # default: every tracked .py and .md file

Idempotent: run it again after merging a branch that still imports the old names. It rewrites
dotted names (`shared.contracts.api` -> `neuron_atlas_client.contracts.api`), then lets ruff sort
the imports it touched. It prints the files it changed, and any call of `JobPublic.of(record)`,
which became `shared.jobs.job_public.job_public(record)` (server code, not the client's) and needs a
hand edit.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = (
    "api",
    "base",
    "groups",
    "hierarchy",
    "input_check",
    "labels",
    "models",
    "problem",
    "uncertainty",
    "comparison",
)
MOVED = {
    **{f"shared.contracts.{name}": f"neuron_atlas_client.contracts.{name}" for name in CONTRACTS},
    "shared.options": "neuron_atlas_client.options",
    "shared.errors": "neuron_atlas_client.errors",
    "neuron_atlas.client": "neuron_atlas_client",
    "neuron_atlas.remote_cli": "neuron_atlas_client.remote_cli",
    "neuron_atlas.mlflow_log": "neuron_atlas_client.mlflow_log",
    "neuron_atlas.option_flags": "neuron_atlas_client.option_flags",
    "neuron_atlas.comparison_gate": "neuron_atlas_client.comparison_gate",
}
# Longest first, whole dotted names only: `shared.options_x` and `my.shared.options` stay, and so
# do logger names (the client's logger keeps "neuron_atlas.client").
OLD_NAMES = "|".join(re.escape(old) for old in sorted(MOVED, key=len, reverse=True))
PATTERN = re.compile(r"(?<![\w.])(?<!getLogger\(\")(" + OLD_NAMES + r")(?![\w])")
# `from shared.contracts import api` and `from neuron_atlas import remote_cli`: the package moved too.
FROM_PACKAGE = re.compile(
    r"^(\s*)from (shared\.contracts|shared|neuron_atlas) import ([\w, ]+)$", re.MULTILINE
)


def rewrite(text: str) -> str:
    text = PATTERN.sub(lambda m: MOVED[m.group(1)], text)

    def split_from(match: re.Match[str]) -> str:
        indent, package, names = (
            match.group(1),
            match.group(2),
            [n.strip() for n in match.group(3).split(",")],
        )
        moved = [n for n in names if f"{package}.{n}" in MOVED]
        if not moved:
            return match.group(0)
        lines = [_import_line(indent, MOVED[f"{package}.{n}"], n) for n in moved]
        if rest := [n for n in names if n not in moved]:
            lines.insert(0, f"{indent}from {package} import {', '.join(rest)}")
        return "\n".join(lines)

    return FROM_PACKAGE.sub(split_from, text)


def _import_line(indent: str, module: str, name: str) -> str:
    parent, _, last = module.rpartition(".")
    if not parent:  # `from neuron_atlas import client`: the package itself
        return f"{indent}import {module} as {name}"
    return f"{indent}from {parent} import {last}" + (f" as {name}" if last != name else "")


def tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "*.py", "*.md", "*.pyi"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / name for name in listed]


def main(argv: list[str]) -> int:
    paths = [Path(a).resolve() for a in argv] or tracked_files()
    changed = []
    for path in paths:
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        text = path.read_text()
        new = rewrite(text)
        if new != text:
            path.write_text(new)
            changed.append(path)
        for number, line in enumerate(new.splitlines(), 1):
            if "JobPublic.of(" in line:
                print(f"{path.relative_to(ROOT)}:{number}: JobPublic.of(...) -> job_public(...) by hand")
    python = [str(p) for p in changed if p.suffix == ".py"]
    if python:  # the new names sort elsewhere among the imports
        ruff = [sys.executable, "-m", "ruff"]
        subprocess.run([*ruff, "check", "--select", "I", "--fix", "--quiet", *python], cwd=ROOT, check=False)
        subprocess.run([*ruff, "format", "--quiet", *python], cwd=ROOT, check=False)
    for path in changed:
        print(f"rewrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
