"""`/v1/jobs/{id}/...`: a finished job's hierarchy, one cluster, one neuron, artifact links."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from neuron_atlas_client.contracts.api import (
    ArtifactPublic,
    ArtifactsPublic,
    NeuronClusterPublic,
    NeuronPublic,
)
from neuron_atlas_client.contracts.hierarchy import Cluster, Hierarchy
from services.gateway.deps import JobDep, SettingsDep, StoreDep
from services.gateway.problems import Problem
from services.gateway.results import job_result
from shared.storage import artifacts

router = APIRouter(prefix="/v1/jobs", tags=["results"])


@router.get("/{job_id}/hierarchy", response_model=Hierarchy)
def get_hierarchy(job: JobDep, store: StoreDep) -> Response:
    """The job's hierarchy.json (schema: shared/schemas/hierarchy.schema.json)."""
    # Answered as stored (it was checked against its contract when cached): no second encoding.
    return Response(job_result(job, store).body, media_type="application/json")


@router.get("/{job_id}/clusters/{cluster_id}", response_model=Cluster)
def get_cluster(job: JobDep, store: StoreDep, cluster_id: str) -> Cluster:
    """One cluster of the hierarchy: label, images, neuron group, difference neurons."""
    cluster = job_result(job, store).clusters.get(cluster_id)
    if cluster is None:
        raise Problem(404, "not-found", f"No cluster {cluster_id} in job {job.id}.")
    return cluster


@router.get("/{job_id}/neurons/{layer}/{channel}", response_model=NeuronPublic)
def get_neuron(job: JobDep, store: StoreDep, layer: str, channel: int) -> NeuronPublic:
    """The clusters whose neuron group holds this neuron."""
    result = job_result(job, store)
    sizes = {entry.name: entry.channels for entry in result.hierarchy.layers}
    if layer not in sizes or not 0 <= channel < sizes[layer]:
        raise Problem(
            404,
            "not-found",
            f"No neuron {layer}/{channel} in job {job.id}.",
            fix=f"Layers: {', '.join(sizes)}.",
        )
    found = [
        NeuronClusterPublic(
            id=m.cluster.id,
            level=m.cluster.level,
            label=m.cluster.label,
            support=m.neuron.support,
            difference=m.difference,
            evidence=m.neuron.evidence,
        )
        for m in result.memberships.get((layer, channel), [])
    ]
    return NeuronPublic(layer=layer, channel=channel, clusters=found)


@router.get("/{job_id}/artifacts", response_model=ArtifactsPublic)
def get_artifacts(
    job: JobDep,
    store: StoreDep,
    settings: SettingsDep,
    thumbs: Annotated[
        bool,
        Query(
            description="Also link the thumbnails (`thumbs/{shard}.zip`: a zip of WebP images "
            "per shard), which the explorer report of a downloaded job shows."
        ),
    ] = False,
) -> ArtifactsPublic:
    """Presigned download links (on the public S3 endpoint) for the job's artifacts. The
    uploaded images are never listed (one link per image); their thumbnails on request."""
    prefix = artifacts.job_prefix(job.id)
    expires = settings.presign_expiry_s
    left_out = ("images/",) if thumbs else ("images/", "thumbs/")
    links = [
        ArtifactPublic(name=key[len(prefix) :], url=store.presigned_url(key, expires))
        for key in store.list(prefix)
        if not key[len(prefix) :].startswith(left_out)
    ]
    return ArtifactsPublic(expires_in_s=expires, artifacts=links)
