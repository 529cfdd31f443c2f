"""Dependencies point one way: the gateway imports no torch and no worker code, no service
imports another service, and `shared` and `neuron_core` import no service."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gateway_app_imports_without_torch_or_worker_code() -> None:
    code = (
        "import sys, services.gateway.main as m; assert m.app is not None; "
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "('torch', 'torchvision', 'transformers', 'sentence_transformers', 'finch') "
        "or n.startswith(('services.caption', 'services.activation', 'services.embed_cluster', "
        "'services.labelling', 'services.uncertainty', 'neuron_core'))); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    root = str(Path(__file__).resolve().parents[1])
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": root},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_client_and_remote_cli_import_no_torch_and_no_server_libraries() -> None:
    """A pipeline step that only talks to a gateway stays light: no torch, no Redis, no Celery."""
    code = (
        "import sys, neuron_atlas_client, neuron_atlas_client.remote_cli; "
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "('torch', 'torchvision', 'transformers', 'sentence_transformers', 'redis', 'celery', "
        "'fastapi', 'minio', 'mlflow', 'numpy')); print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_gateway_requirements_name_no_torch() -> None:
    text = (Path(__file__).resolve().parents[1] / "services/gateway/requirements.txt").read_text()
    assert not any(
        line.split("==")[0].strip() in ("torch", "torchvision", "transformers") for line in text.splitlines()
    )


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def forbidden_imports(package: str, forbidden: tuple[str, ...]) -> list[str]:
    """Imports of the modules `forbidden` names or their submodules (`neuron_atlas` forbids
    `neuron_atlas.cli`, not `neuron_atlas_client`)."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in imported_modules(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


SERVICES = sorted(
    p.name for p in (ROOT / "services").iterdir() if (p / "tasks.py").exists() or p.name == "gateway"
)


def test_no_service_imports_another_service() -> None:
    assert len(SERVICES) == 6
    found = []
    for service in SERVICES:
        others = tuple(f"services.{other}" for other in SERVICES if other != service)
        found += forbidden_imports(f"services/{service}", others)
    assert found == []


def test_shared_and_neuron_core_import_no_service_and_no_runner() -> None:
    assert forbidden_imports("shared", ("services", "neuron_core", "neuron_atlas")) == []
    assert forbidden_imports("shared", ("neuron_atlas_client",)) != []  # the rule tells the two apart
    assert forbidden_imports("neuron_core", ("services", "neuron_atlas")) == []


# What the client distribution may import: its own package, its two dependencies, the standard
# library, and the optional parts it asks for only when used (the `mlflow` extra; rich's bar).
CLIENT_MAY_IMPORT = {"neuron_atlas_client", "httpx", "pydantic", "mlflow", "rich"}


def test_the_client_distribution_imports_only_itself_its_dependencies_and_the_standard_library() -> None:
    found = []
    for path in sorted((ROOT / "client/src/neuron_atlas_client").rglob("*.py")):
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top not in CLIENT_MAY_IMPORT and top not in sys.stdlib_module_names and top != "__future__":
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    assert found == []


def test_the_rule_catches_an_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from services.activation.stage import run_groups\n")
    assert "services.activation.stage" in imported_modules(module)
