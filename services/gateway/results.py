"""Finished jobs' results, parsed once through their contract and kept a few at a time, with an
index from each neuron to the clusters whose group holds it."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache

from neuron_atlas_client.contracts.hierarchy import Cluster, Hierarchy, Neuron
from services.gateway.problems import Problem
from shared.jobs.jobstore import JobRecord
from shared.storage import artifacts
from shared.storage.stores import PrefixedStore, S3Store, Store

NeuronKey = tuple[str, int]  # (layer, channel)


@dataclass(frozen=True)
class Membership:
    cluster: Cluster
    neuron: Neuron
    difference: bool  # in the cluster's group and not in its parent's


@dataclass(frozen=True)
class JobResult:
    hierarchy: Hierarchy
    body: bytes  # hierarchy.json as stored, answered as is
    clusters: dict[str, Cluster]
    memberships: dict[NeuronKey, list[Membership]]

    @classmethod
    def parse(cls, body: bytes) -> JobResult:
        hierarchy = Hierarchy.model_validate_json(body)
        memberships: dict[NeuronKey, list[Membership]] = defaultdict(list)
        for cluster in hierarchy.clusters:
            difference = {(n.layer, n.channel) for n in cluster.difference_neurons}
            for neuron in cluster.neurons:
                key = (neuron.layer, neuron.channel)
                memberships[key].append(Membership(cluster, neuron, key in difference))
        return cls(hierarchy, body, {c.id: c for c in hierarchy.clusters}, dict(memberships))


# Keyed by when the job finished, so a relabelled job (finished again) is read afresh by every
# gateway replica; a deleted job's entry is never asked for again and ages out.
@lru_cache(maxsize=8)
def _load(store: S3Store, job_id: str, finished_at: str | None, key: str | None) -> JobResult:
    view = PrefixedStore(store, artifacts.job_prefix(job_id))
    return JobResult.parse(view.get_bytes(hierarchy_key(view, job_id, key)))


def model_keys(view: Store) -> list[str]:
    """The keys of a job's target models, the baseline first (one for a single-model job)."""
    return [model.resolved_key for model in artifacts.read_options(view).target_models()]


def hierarchy_key(view: Store, job_id: str, key: str | None) -> str:
    """Where model `key`'s hierarchy.json is in the job (default: its only model, or a
    multi-model job's baseline); a 404 problem for a key the job has no model of."""
    keys = model_keys(view)
    if key is not None and key not in keys:
        raise Problem(
            404, "not-found", f"Job {job_id} has no model {key}.", fix=f"Its models: {', '.join(keys)}."
        )
    if len(keys) == 1:
        return artifacts.HIERARCHY
    return artifacts.model_prefix(key or keys[0]) + artifacts.HIERARCHY


def finished(job: JobRecord) -> None:
    """A 409 problem before the job has succeeded."""
    if job.status != "succeeded":
        raise Problem(
            409,
            "job-not-finished",
            f"The job is {job.status}; its result is not ready.",
            fix="Poll the job until it has succeeded.",
        )


def job_result(job: JobRecord, store: S3Store, key: str | None = None) -> JobResult:
    """The result of a succeeded job (of its model `key`, in a multi-model job; default the
    baseline); a 409 problem before it has succeeded."""
    if job.status != "succeeded":
        raise Problem(
            409,
            "job-not-finished",
            f"The job is {job.status}; its hierarchy is not ready.",
            fix="Poll the job until it has succeeded.",
        )
    return _load(store, job.id, job.finished_at, key)
