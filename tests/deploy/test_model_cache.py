"""The activation workers' model cache in k8s/: registered weights (up to KEEP_FILES files of
GATEWAY_MAX_MODEL_BYTES each) and the scratch copy of a model being checked live on an emptyDir
of their own, large enough for all of them, within the pod's ephemeral-storage limit. Before,
they went to the 2 Gi /tmp volume, and two large models evicted the pod (issue 26)."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from services.gateway.settings import GatewaySettings
from shared.models.registered_model import KEEP_FILES
from tests.deploy.manifests import Obj, config, is_worker, overlays, pod_spec, render, workloads

DEPLOYED = [o for o in overlays() if o != "k8s/base"]
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def quantity(text: str) -> int:
    """Bytes in a Kubernetes quantity ("6Gi", "512Mi", "1G", "1073741824")."""
    for unit in sorted(UNITS, key=len, reverse=True):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * UNITS[unit])
    return int(text)


def activation_workers(objects: list[Obj]) -> list[Obj]:
    return [
        w
        for w in workloads(objects)
        if is_worker(w) and "services.activation.worker" in pod_spec(w)["containers"][0]["command"]
    ]


def volume_holding(workload: Obj, path: str) -> tuple[str, Obj]:
    """(mount path, volume) of the mount that holds `path`."""
    container = pod_spec(workload)["containers"][0]
    mounts = [
        m for m in container.get("volumeMounts", []) if PurePosixPath(path).is_relative_to(m["mountPath"])
    ]
    assert mounts, f"{workload['metadata']['name']}: {path} is on the read-only root filesystem"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
    return mount["mountPath"], volumes[mount["name"]]


@pytest.mark.parametrize("overlay", DEPLOYED)
def test_the_model_cache_holds_every_kept_model_and_a_scratch_copy(overlay: str) -> None:
    objects = render(overlay)
    max_model_bytes = int(config(objects).get("GATEWAY_MAX_MODEL_BYTES", GatewaySettings().max_model_bytes))
    found = activation_workers(objects)
    assert found, f"{overlay} runs no activation worker"
    for worker in found:
        name = worker["metadata"]["name"]
        env = {e["name"]: e.get("value", "") for e in pod_spec(worker)["containers"][0].get("env", [])}
        cache = env.get("ACTIVATION_REGISTERED_MODEL_DIR")
        scratch = env.get("TMPDIR")  # where a model check's scratch copy goes (tempfile)
        assert cache and scratch, f"{name}: the model cache and TMPDIR must be set"
        cache_mount, volume = volume_holding(worker, cache)
        assert volume_holding(worker, scratch)[0] == cache_mount, f"{name}: scratch copies elsewhere"
        assert cache_mount != "/tmp" and "emptyDir" in volume, (name, volume)
        size = quantity(volume["emptyDir"]["sizeLimit"])
        assert size >= (KEEP_FILES + 1) * max_model_bytes, (
            f"{name}: the {volume['name']} volume ({volume['emptyDir']['sizeLimit']}) cannot hold "
            f"{KEEP_FILES} kept models and a scratch copy of {max_model_bytes} bytes each"
        )
        # Every emptyDir on disk counts against the pod's ephemeral storage: its limit holds them.
        resources = pod_spec(worker)["containers"][0]["resources"]
        on_disk = sum(
            quantity(v["emptyDir"]["sizeLimit"])
            for v in pod_spec(worker)["volumes"]
            if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"
        )
        assert quantity(resources["limits"]["ephemeral-storage"]) >= on_disk, name
        assert quantity(resources["requests"]["ephemeral-storage"]) >= on_disk, name


def test_a_larger_model_limit_without_a_larger_cache_fails_the_check() -> None:
    """The check reads the limit from the manifests: doubling it alone must not pass."""
    objects = render("k8s")
    worker = activation_workers(objects)[0]
    _, volume = volume_holding(worker, "/model-cache/weights")
    limit = quantity(volume["emptyDir"]["sizeLimit"])
    assert limit < (KEEP_FILES + 1) * 2 * int(config(objects)["GATEWAY_MAX_MODEL_BYTES"])


def test_quantities_are_read_as_kubernetes_writes_them() -> None:
    assert quantity("6Gi") == 6 * 2**30 and quantity("512Mi") == 2**29 and quantity("1G") == 10**9
    assert quantity("1073741824") == 2**30
