"""Every overlay under k8s/ renders with kustomize, and every object it makes meets the pinned
Kubernetes version's schemas (strict: unknown fields fail) or, for KEDA's, KEDA's CRD schema."""

from __future__ import annotations

import copy

import jsonschema
import kubernetes_validate
import pytest

from tests.deploy.manifests import KUBERNETES_VERSION, named, overlays, render, validate


def test_our_validation_agrees_with_kubernetes_validate() -> None:
    """tests.deploy.manifests.validate caches kubernetes-validate's schemas; it must judge alike."""
    gateway = named(render("k8s"), "Deployment")["gateway"]
    assert kubernetes_validate.validate(gateway, KUBERNETES_VERSION, strict=True) == "1.35"
    validate(gateway)
    gateway["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(gateway, KUBERNETES_VERSION, strict=True)
    with pytest.raises(jsonschema.ValidationError):
        validate(gateway)


def test_the_overlays_are_found() -> None:
    assert {"k8s", "k8s/base", "k8s/gpu", "k8s/managed"} <= set(overlays())


@pytest.mark.parametrize("overlay", overlays())
def test_every_object_meets_its_schema(overlay: str) -> None:
    objects = render(overlay)
    assert objects, f"{overlay} renders nothing"
    for obj in objects:
        try:
            validate(obj)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{overlay}: {obj['kind']}/{obj['metadata']['name']}: {exc}")


def test_every_object_lives_in_the_namespace() -> None:
    for overlay in overlays():
        for obj in render(overlay):
            if obj["kind"] != "Namespace":
                assert obj["metadata"].get("namespace") == "neuron-atlas", (overlay, obj["metadata"]["name"])


@pytest.mark.parametrize(
    "break_it",
    [
        lambda objs: named(objs, "Deployment")["gateway"]["spec"]["template"]["spec"]["containers"][0].update(
            livenesProbe=None, livenessProbe_typo={}
        ),
        lambda objs: named(objs, "Deployment")["caption"]["spec"]["template"]["spec"].update(
            terminationGracePeriodSeconds="3660"
        ),
        lambda objs: named(objs, "ScaledObject")["caption"]["spec"]["triggers"][0]["metadata"].update(
            listLength=2
        ),
        lambda objs: named(objs, "ScaledObject")["caption"]["spec"]["triggers"][0]["metadata"].update(
            listname="caption"
        ),
        lambda objs: named(objs, "ScaledObject")["caption"]["spec"].update(minReplicas=0),
        lambda objs: named(objs, "TriggerAuthentication")["redis"]["spec"]["secretTargetRef"][0].pop("key"),
    ],
    ids=[
        "unknown-field",
        "string-for-integer",
        "keda-integer-metadata",
        "keda-typo",
        "keda-hpa-field",
        "keda-no-key",
    ],
)
def test_the_validators_refuse_a_broken_object(break_it) -> None:  # type: ignore[no-untyped-def]
    """The checks above can fail: each of these mistakes is caught."""
    objects = copy.deepcopy(render("k8s"))
    break_it(objects)
    failures = 0
    for obj in objects:
        try:
            validate(obj)
        except jsonschema.ValidationError:
            failures += 1
    assert failures == 1
