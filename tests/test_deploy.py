"""The deployment files agree with the code: services, modules, queues, build contexts."""

import ast
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SECRETS = {"S3_ACCESS_KEY": "atlas", "S3_SECRET_KEY": "a-long-test-secret", "GATEWAY_API_KEYS": "{}"}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def service_folders() -> set[str]:
    return {p.parent.name for p in ROOT.glob("services/*/worker.py")} | {
        p.parent.name for p in ROOT.glob("services/*/main.py")
    }


def module_defines(module: str, attribute: str) -> bool:
    """The module exists and assigns `attribute` at top level (checked without importing it)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.startswith(str(ROOT)):
        return False
    tree = ast.parse(Path(spec.origin).read_text())
    return any(
        isinstance(node, ast.Assign) and any(getattr(t, "id", None) == attribute for t in node.targets)
        for node in tree.body
    )


def check_command(command: list[str]) -> str:
    """Return the service a command runs after checking that its module is real."""
    if command[0] == "celery":
        module = command[command.index("-A") + 1]
        assert module_defines(module, "app"), f"{module} is no Celery entry module"
        queue = command[command.index("-Q") + 1]
        assert module == f"services.{queue}.worker", f"{module} should listen on its own queue"
        return queue
    if command[0] == "uvicorn":
        module, attribute = command[1].split(":")
        assert module_defines(module, attribute), f"{command[1]} does not exist"
        return module.split(".")[1]
    raise AssertionError(f"unexpected command {command}")


def test_every_service_folder_has_a_compose_service_with_a_real_module():
    services = compose()["services"]
    running = {check_command(s["command"]) for s in services.values() if "command" in s and "build" in s}
    assert running == service_folders()


def test_every_build_context_dockerfile_and_copied_path_exists():
    for name, service in compose()["services"].items():
        if "build" not in service:
            continue
        context = ROOT / service["build"]["context"]
        dockerfile = context / service["build"]["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (context / source).exists(), f"{dockerfile.name} copies missing {source}"


def test_required_secrets_are_demanded_not_defaulted():
    text = (ROOT / "docker-compose.yml").read_text()
    for variable in SECRETS:
        assert re.search(r"\$\{" + variable + r":\?", text), f"{variable} must be ${{{variable}:?…}}"
    assert "appendonly" in text and "service_completed_successfully" in text


def test_kubernetes_workers_match_the_compose_services():
    deployments = [
        doc
        for path in sorted((ROOT / "k8s").rglob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["kind"] == "Deployment"
    ]
    served = {check_command(d["spec"]["template"]["spec"]["containers"][0]["command"]) for d in deployments}
    assert served == service_folders()


@pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose (Debian) not installed")
def test_compose_file_is_valid_and_refuses_to_start_without_secrets():
    env = {**os.environ, **SECRETS}
    run = subprocess.run(
        ["docker-compose", "--profile", "gpu", "config", "--services"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert {"caption-gpu", "activation-gpu", "gateway", "redis", "minio"} <= set(run.stdout.split())
    bare = {k: v for k, v in os.environ.items() if k not in SECRETS}
    run = subprocess.run(
        ["docker-compose", "config", "-q"], cwd=ROOT, env=bare, capture_output=True, text=True
    )
    assert run.returncode != 0 and "set S3_ACCESS_KEY" in run.stderr


def test_the_test_suite_starts_every_worker_service():
    from tests.servers import SUITE_WORKERS

    assert set(SUITE_WORKERS) == {p.parent.name for p in ROOT.glob("services/*/worker.py")}
