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
SECRETS = {
    "S3_ACCESS_KEY": "atlas",
    "S3_SECRET_KEY": "a-long-test-secret",
    "GATEWAY_API_KEYS": "{}",
    "WEBHOOK_SIGNING_KEY": "a-long-test-signing-key",
}


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


FIRST_PARTY = {"shared", "services", "neuron_core", "neuron_atlas", "neuron_atlas_client"}


def test_each_image_holds_every_package_its_code_imports():
    """The gateway's code imports the contracts from the client distribution: its image copies
    shared/ and services/ and installs client/ (so does the workers')."""
    from tests.test_imports import imported_modules

    imported = {
        name.split(".")[0]
        for package in ("services/gateway", "shared")
        for path in (ROOT / package).rglob("*.py")
        for name in imported_modules(path)
    }
    assert imported & FIRST_PARTY == {"shared", "services", "neuron_atlas_client"}
    for image, client in (("gateway", "/tmp/client"), ("worker", "./client")):
        text = (ROOT / f"docker/{image}.Dockerfile").read_text()
        copied = {line.split()[1] for line in text.splitlines() if line.startswith("COPY ")}
        assert {"shared", "client"} <= copied, f"{image}: {copied}"
        installs = re.search(rf"^RUN pip install .*{re.escape(client)}\b", text, re.M)
        assert installs, f"{image}'s image does not install the client distribution"


def test_required_secrets_are_demanded_not_defaulted():
    text = (ROOT / "docker-compose.yml").read_text()
    for variable in SECRETS:
        assert re.search(r"\$\{" + variable + r":\?", text), f"{variable} must be ${{{variable}:?…}}"
    assert "appendonly" in text and "service_completed_successfully" in text


def k8s_containers(overlay: str) -> list[dict]:
    from tests.deploy.manifests import pod_spec, render, workloads

    return [c for w in workloads(render(overlay)) for c in pod_spec(w)["containers"]]


def without_node_name(command: list[str]) -> list[str]:
    """A command less its `-n NAME@%h` (compose and k8s name their nodes each their own way)."""
    if "-n" not in command:
        return command
    at = command.index("-n")
    return command[:at] + command[at + 2 :]


@pytest.mark.parametrize("overlay", ["k8s", "k8s/gpu", "k8s/managed"])
def test_kubernetes_runs_every_service_as_compose_does(overlay: str):
    """Same images, same commands (so the same modules and queues) in the rendered overlay."""
    compose_services = compose()["services"]
    compose_commands = [without_node_name(s["command"]) for s in compose_services.values() if "command" in s]
    compose_images = {
        s["image"].replace("${NEURON_ATLAS_TAG:-latest}", "latest") for s in compose_services.values()
    }
    served = set()
    for container in k8s_containers(overlay):
        assert container["image"] in compose_images, (
            f"{container['image']} is not an image of docker-compose.yml"
        )
        if container.get("command", [""])[0] in ("celery", "uvicorn"):
            assert without_node_name(container["command"]) in compose_commands, container["command"]
            served.add(check_command(container["command"]))
    assert served == service_folders()


# Variables the manifests set that are no setting of ours: read by libraries, Redis or MinIO.
THIRD_PARTY_VARIABLES = {
    "HF_HOME",
    "TORCH_HOME",
    "HF_HUB_OFFLINE",
    "HOME",
    "XDG_CACHE_HOME",
    "NUMBA_CACHE_DIR",
    "MPLCONFIGDIR",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "MC_CONFIG_DIR",
    "REDISCLI_AUTH",
    "OMP_NUM_THREADS",
    "REDIS_PASSWORD",  # Redis's requirepass and KEDA's scaler; the services read REDIS_URL
    "PROMETHEUS_MULTIPROC_DIR",  # prometheus-client's multiprocess mode (shared/observability/metrics.py)
    "TMPDIR",  # Python's tempfile: the activation workers' model checks scratch on the model cache
}


def setting_names() -> set[str]:
    from services.activation.settings import ActivationSettings
    from services.caption.settings import CaptionSettings
    from services.embed_cluster.settings import EmbedClusterSettings
    from services.gateway.settings import GatewaySettings
    from services.labelling.settings import LabelSettings
    from services.uncertainty.settings import UncertaintySettings
    from shared.settings import InfraSettings
    from shared.webhooks.delivery import WebhookSettings

    names = {name.upper() for name in InfraSettings.model_fields}
    for cls in (
        GatewaySettings,
        CaptionSettings,
        ActivationSettings,
        UncertaintySettings,
        EmbedClusterSettings,
        LabelSettings,
        WebhookSettings,
    ):
        prefix = cls.model_config.get("env_prefix", "")
        names |= {f"{prefix}{name}".upper() for name in cls.model_fields}
    return names


def test_kubernetes_sets_only_real_settings_and_every_one_compose_sets():
    from tests.deploy.manifests import config, example_secret, render

    known = setting_names()
    k8s_names = set(config(render("k8s"))) | set(example_secret())
    for container in k8s_containers("k8s/gpu") + k8s_containers("k8s"):
        k8s_names |= {e["name"] for e in container.get("env", [])}
    for example in ("k8s/base/config.yaml", "k8s/secret.example.yaml"):  # the optional ones, commented out
        k8s_names |= set(re.findall(r"^\s*#\s*([A-Z][A-Z0-9_]+):", (ROOT / example).read_text(), re.M))
    unknown = k8s_names - known - THIRD_PARTY_VARIABLES
    assert not unknown, f"not settings of ours: {unknown}"
    compose_names = set()
    for service in compose()["services"].values():
        environment = service.get("environment", {})
        compose_names |= set(environment if isinstance(environment, dict) else [])
    # Compose offers turning auth off for local use; a cluster leaves it on (its default).
    compose_settings = {n for n in compose_names if n in known} - {"GATEWAY_AUTH_DISABLED"}
    assert compose_settings <= k8s_names, f"compose sets, k8s does not: {compose_settings - k8s_names}"


def test_kubernetes_ports_match_compose_and_the_settings():
    from urllib.parse import urlsplit

    from tests.deploy.manifests import config, example_secret, named, pod_spec, render

    objects = render("k8s")
    services = named(objects, "Service")
    published = {
        name: {int(str(p).split(":")[-1]) for p in s.get("ports", [])}
        for name, s in compose()["services"].items()
    }
    gateway = pod_spec(named(objects, "Deployment")["gateway"])["containers"][0]
    port = int(gateway["command"][gateway["command"].index("--port") + 1])
    assert {p["containerPort"] for p in gateway["ports"]} == {port} and port in published["gateway"]
    assert [p["targetPort"] for p in services["gateway"]["spec"]["ports"]] == [port]
    for variable, service in (("S3_ENDPOINT", "minio"), ("REDIS_URL", "redis")):
        url = urlsplit({**config(objects), **example_secret()}[variable])
        assert url.hostname == service, variable
        (service_port,) = services[service]["spec"]["ports"]
        container = pod_spec(named(objects, "StatefulSet")[service])["containers"][0]
        assert url.port == service_port["port"] == service_port["targetPort"]
        assert {p["containerPort"] for p in container["ports"]} == {url.port}


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
