"""The Python client of the Neuron Atlas API (on httpx; sync `Client`, async `AsyncClient`).

    from neuron_atlas.client import Client
    with Client("http://gateway:8000") as atlas:   # key: NEURON_ATLAS_API_KEY
        job = atlas.submit("images/", {"model": "resnet18"})
        job = atlas.wait(job.id, timeout_s=3600, on_progress=print)
        top = atlas.concepts(job.id, level=max(c.level for c in atlas.concepts(job.id)))

The answers are the API's own models (`shared.contracts.api`, `shared.contracts.hierarchy`).
Light to import: no torch, no model libraries.
"""

from neuron_atlas.client._core import (
    ApiError,
    ClientError,
    ConfigError,
    JobFailed,
    RetryNotice,
    RetryPolicy,
    TransportError,
    WaitTimeout,
)
from neuron_atlas.client.aio import AsyncClient
from neuron_atlas.client.sync import Client
from shared.contracts.api import (
    ArtifactsPublic,
    Callback,
    DeliveriesPublic,
    DeliveryAttempt,
    JobPublic,
    JobsPublic,
    NeuronPublic,
)
from shared.contracts.hierarchy import Cluster, Hierarchy

__all__ = [
    "ApiError",
    "ArtifactsPublic",
    "AsyncClient",
    "Callback",
    "Client",
    "ClientError",
    "Cluster",
    "ConfigError",
    "DeliveriesPublic",
    "DeliveryAttempt",
    "Hierarchy",
    "JobFailed",
    "JobPublic",
    "JobsPublic",
    "NeuronPublic",
    "RetryNotice",
    "RetryPolicy",
    "TransportError",
    "WaitTimeout",
]
