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
from shared.storage.stores import PrefixedStore, S3Store

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
def _load(store: S3Store, job_id: str, finished_at: str | None) -> JobResult:
    body = PrefixedStore(store, artifacts.job_prefix(job_id)).get_bytes(artifacts.HIERARCHY)
    return JobResult.parse(body)


def job_result(job: JobRecord, store: S3Store) -> JobResult:
    """The result of a succeeded job; a 409 problem before it has succeeded."""
    if job.status != "succeeded":
        raise Problem(
            409,
            "job-not-finished",
            f"The job is {job.status}; its hierarchy is not ready.",
            fix="Poll the job until it has succeeded.",
        )
    return _load(store, job.id, job.finished_at)
